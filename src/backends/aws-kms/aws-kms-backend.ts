// AWS KMS backend. AWS's own rotation of a key's material is invisible to callers, so here a
// key version is a whole KMS key: the envelope records the key's id (its ARN when the key lives
// under another account or region than the backend's), Decrypt names that key, and old keys
// keep decrypting after the alias has moved on. The envelope header is bound to each wrap as
// EncryptionContext. Rotation through the broker creates a key (or takes the next listed one)
// and moves the alias; an alias moved in AWS itself is adopted through `externalRotation`.
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  ListResourceTagsCommand,
  UpdateAliasCommand,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import { isAwsAlias, type AwsKmsBackendConfig } from './aws-kms-schema.ts';
import { startDeadline, type Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import { unlessMissing } from '../key-missing.ts';
import { AWS_KMS_SERVICE, createAwsKms, type AwsKms } from './aws-kms-client.ts';

export const AWS_KMS_MECHANISM = 'aws-kms';
/** The EncryptionContext entry that carries the envelope header (base64). */
export const HEADER_CONTEXT_KEY = 'kms-broker:header';
/** On a key: the id of the key it replaced, so older keys are found again after the alias moved. */
export const PREVIOUS_KEY_TAG = 'kms-broker:previous-key';
export const BACKEND_TAG = 'kms-broker:backend';
/** Bound on the walk along previous-key tags (a loop in hand-set tags ends it too). */
const MAX_PREVIOUS_KEYS = 64;
const OPEN_TIMEOUT_MS = 10000;

type Described = KeyMetadata & { KeyId: string; Arn: string; CreationDate: Date };

export class AwsKmsBackend implements KekBackend {
  readonly type = 'aws-kms';
  readonly mechanism = AWS_KMS_MECHANISM;
  readonly autoCreateOption = 'createIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly externalRotation?: ExternalRotation;
  readonly #config: AwsKmsBackendConfig;
  readonly #kms: AwsKms;
  readonly #logger: Logger;
  /** `arn:<partition>:kms:<region>:<account>:key/`, learnt from the first key described. */
  #keyArnPrefix: string | undefined;

  constructor(config: AwsKmsBackendConfig, deps: { logger: Logger }) {
    this.#config = config;
    this.name = config.name;
    this.autoCreate = config.createIfMissing;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#kms = createAwsKms(config);
    // Only an alias can move to another key; a key named by id or ARN never rotates in AWS.
    if (isAwsAlias(config.key)) {
      this.externalRotation = {
        intervalMs: config.rotationPoll.intervalMs,
        stableForMs: config.rotationPoll.stableForMs,
        latest: async deadline => this.#info(await this.#enabledCurrent(deadline)),
      };
    }
  }

  /** One DescribeKey: fails start-up on refused credentials, not on a missing alias. */
  async open(): Promise<void> {
    await this.#describe(this.#config.key, startDeadline(OPEN_TIMEOUT_MS));
  }

  /** The current key, the keys it replaced (by tag) and the listed keys; the current one last. */
  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    const current = await this.#describe(this.#config.key, deadline);
    if (current === undefined) return [];
    const found = new Map<string, Described>([[current.KeyId, current]]);
    let key: Described | undefined = current;
    for (let step = 0; key !== undefined && step < MAX_PREVIOUS_KEYS; step++) {
      const previous = await this.#previousKeyId(key.KeyId, deadline);
      key =
        previous === undefined || found.has(previous) ? undefined : await this.#describe(previous, deadline);
      if (key !== undefined) found.set(key.KeyId, key);
    }
    for (const listed of await this.#listedKeys(deadline)) {
      if (!found.has(listed.KeyId)) found.set(listed.KeyId, listed);
    }
    found.delete(current.KeyId);
    const older = [...found.values()].sort((a, b) => a.CreationDate.getTime() - b.CreationDate.getTime());
    return [...older, current].map(meta => this.#info(meta));
  }

  /**
   * Switches the alias to a new key: a created one (rotation.createKeys) or the next one of
   * rotation.keys. Creates the alias and its first key when neither exists (createIfMissing).
   */
  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const { key, rotation } = this.#config;
    const current = await this.#describe(key, deadline);
    if (current === undefined) {
      const created = await this.#createKey(undefined, deadline);
      await this.#kms.call(deadline, `kms:CreateAlias on ${key} and ${created.Arn}`, (kms, abortSignal) =>
        kms.send(new CreateAliasCommand({ AliasName: aliasName(key), TargetKeyId: created.KeyId }), {
          abortSignal,
        }),
      );
      this.#logger.info({ alias: key, keyId: created.KeyId }, 'created the AWS KMS key and its alias');
      return this.#info(created);
    }
    if (!isAwsAlias(key)) throw this.#cannotRotate('the backend names a fixed key, not an alias');
    let next: Described;
    if (rotation.createKeys) {
      next = await this.#createKey(current.KeyId, deadline);
    } else if (rotation.keys.length > 0) {
      next = this.#nextListed(current, await this.#listedKeys(deadline));
    } else {
      throw this.#cannotRotate('neither rotation.createKeys nor rotation.keys is set');
    }
    await this.#kms.call(deadline, `kms:UpdateAlias on ${key} and ${next.Arn}`, (kms, abortSignal) =>
      kms.send(new UpdateAliasCommand({ AliasName: aliasName(key), TargetKeyId: next.KeyId }), {
        abortSignal,
      }),
    );
    this.#logger.info({ alias: key, keyId: next.KeyId, previousKeyId: current.KeyId }, 'moved the alias');
    return this.#info(next);
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    const arn = this.#arnOf(request.keyVersion);
    const response = await this.#kms.call(request.deadline, `kms:Encrypt on ${arn}`, (kms, abortSignal) =>
      kms.send(
        new EncryptCommand({
          KeyId: arn,
          Plaintext: request.plaintext,
          EncryptionContext: headerContext(request.aad),
        }),
        { abortSignal },
      ),
    );
    // AWS answers with the ARN of the key that encrypted: it must be the one asked for.
    if (response.CiphertextBlob === undefined || response.KeyId !== arn) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name}: AWS KMS answered Encrypt with an unexpected key or no ciphertext`,
        'BAD_RESPONSE',
      );
    }
    return Buffer.from(response.CiphertextBlob);
  }

  async unwrap(request: UnwrapRequest): Promise<Buffer> {
    if (request.mechanism !== AWS_KMS_MECHANISM) {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name}: the wrapped key was not made by AWS KMS (mechanism ${request.mechanism})`,
      );
    }
    const arn = this.#arnOf(request.keyVersion);
    // KeyId pins the key: AWS refuses a ciphertext of any other key instead of using it.
    const response = await this.#kms.call(request.deadline, `kms:Decrypt on ${arn}`, (kms, abortSignal) =>
      kms.send(
        new DecryptCommand({
          KeyId: arn,
          CiphertextBlob: request.wrapped,
          EncryptionContext: headerContext(request.aad),
        }),
        { abortSignal },
      ),
    );
    if (response.Plaintext === undefined) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name}: AWS KMS answered Decrypt without plaintext`,
        'BAD_RESPONSE',
      );
    }
    return Buffer.from(response.Plaintext);
  }

  /** One DescribeKey of the configured key or alias: reachable, credentials valid, key Enabled. */
  async probe(deadline: Deadline): Promise<void> {
    await this.#enabledCurrent(deadline);
  }

  close(): Promise<void> {
    this.#kms.close();
    return Promise.resolve();
  }

  /** The key's metadata, or undefined when AWS has no such key or alias. */
  async #describe(keyRef: string, deadline: Deadline): Promise<Described | undefined> {
    const response = await unlessMissing(
      this.#kms.call(deadline, `kms:DescribeKey on ${keyRef}`, (kms, abortSignal) =>
        kms.send(new DescribeKeyCommand({ KeyId: keyRef }), { abortSignal }),
      ),
    );
    return response === undefined ? undefined : this.#described(response.KeyMetadata);
  }

  async #enabledCurrent(deadline: Deadline): Promise<Described> {
    const current = await this.#describe(this.#config.key, deadline);
    if (current === undefined) {
      throw new BrokerError(
        'KEY_MISSING',
        `backend ${this.name}: AWS KMS has no key ${this.#config.key}`,
        'NotFoundException',
      );
    }
    if (current.KeyState !== 'Enabled') {
      throw new BrokerError(
        'BACKEND_REJECTED',
        `backend ${this.name}: AWS KMS key ${current.Arn} is ${current.KeyState ?? 'not enabled'}`,
        `KeyState_${current.KeyState ?? 'Unknown'}`,
      );
    }
    return current;
  }

  async #previousKeyId(keyId: string, deadline: Deadline): Promise<string | undefined> {
    const response = await this.#kms.call(
      deadline,
      `kms:ListResourceTags on ${this.#arnOf(keyId)}`,
      (kms, abortSignal) => kms.send(new ListResourceTagsCommand({ KeyId: keyId }), { abortSignal }),
    );
    return response.Tags?.find(tag => tag.TagKey === PREVIOUS_KEY_TAG)?.TagValue;
  }

  /** rotation.keys as AWS describes them, in config order; keys AWS no longer has are left out. */
  async #listedKeys(deadline: Deadline): Promise<Described[]> {
    const described = await Promise.all(this.#config.rotation.keys.map(key => this.#describe(key, deadline)));
    return described.filter(meta => meta !== undefined);
  }

  /** The listed key after the current one; when the current one is not listed, the first newer one. */
  #nextListed(current: Described, listed: readonly Described[]): Described {
    const position = listed.findIndex(meta => meta.KeyId === current.KeyId);
    const next =
      position >= 0
        ? listed[position + 1]
        : listed.find(meta => meta.CreationDate.getTime() > current.CreationDate.getTime());
    if (next === undefined)
      throw this.#cannotRotate(`rotation.keys has no key after ${current.KeyId}; add one`);
    return next;
  }

  async #createKey(previousKeyId: string | undefined, deadline: Deadline): Promise<Described> {
    const tags = [{ TagKey: BACKEND_TAG, TagValue: this.name }];
    if (previousKeyId !== undefined) tags.push({ TagKey: PREVIOUS_KEY_TAG, TagValue: previousKeyId });
    const response = await this.#kms.call(deadline, 'kms:CreateKey and kms:TagResource', (kms, abortSignal) =>
      kms.send(
        new CreateKeyCommand({
          Description: `kms-broker backend ${this.name}: key-encryption key`,
          KeyUsage: 'ENCRYPT_DECRYPT',
          KeySpec: 'SYMMETRIC_DEFAULT',
          Tags: tags,
        }),
        { abortSignal },
      ),
    );
    return this.#described(response.KeyMetadata);
  }

  #described(metadata: KeyMetadata | undefined): Described {
    const { KeyId, Arn, CreationDate } = metadata ?? {};
    if (KeyId === undefined || Arn === undefined || !(CreationDate instanceof Date)) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name}: AWS KMS described a key without id, ARN or creation date`,
        'BAD_RESPONSE',
      );
    }
    this.#keyArnPrefix ??= Arn.slice(0, Arn.lastIndexOf('/') + 1);
    return { ...metadata, KeyId, Arn, CreationDate };
  }

  /**
   * A key's version: its id when it lives under the backend's account and region (short
   * envelopes), its full ARN otherwise. The fingerprint adds the creation time, so a key
   * restored elsewhere under the same id is not mistaken for the original.
   */
  #info(meta: Described): KeyVersionInfo {
    const prefix = this.#keyArnPrefix;
    return {
      version: prefix !== undefined && meta.Arn.startsWith(prefix) ? meta.Arn.slice(prefix.length) : meta.Arn,
      fingerprint: `aws-kms:${meta.Arn}:${meta.CreationDate.getTime()}`,
      createdAt: meta.CreationDate.toISOString(),
    };
  }

  #arnOf(version: string): string {
    if (version.startsWith('arn:')) return version;
    if (this.#keyArnPrefix === undefined) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name}: the account of the ${AWS_KMS_SERVICE} keys is not known yet`,
        'NOT_OPEN',
      );
    }
    return this.#keyArnPrefix + version;
  }

  #cannotRotate(why: string): BrokerError {
    return new BrokerError(
      'BACKEND_REJECTED',
      `backend ${this.name}: cannot rotate through the broker: ${why} (see docs/backends/aws-kms.md)`,
    );
  }
}

/** The bytes bound to a wrap, as EncryptionContext (a string map): deterministic base64. */
function headerContext(aad: Buffer): Record<string, string> {
  return { [HEADER_CONTEXT_KEY]: aad.toString('base64') };
}

/** UpdateAlias and CreateAlias take the alias name, not its ARN. */
function aliasName(key: string): string {
  return key.slice(key.indexOf('alias/'));
}
