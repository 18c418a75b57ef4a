// Which KMS keys are this backend's versions: the key the configured alias (or key) names
// is the current one, the keys it replaced are found again by the previous-key tag each new
// key carries and by rotation.keys, and rotating through the broker creates a key (or takes
// the next listed one) and moves the alias. A version is the key's id, or its ARN when the
// key lives under another account or region than the backend's.
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  ListResourceTagsCommand,
  UpdateAliasCommand,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import { isAwsAlias, type AwsKmsBackendConfig } from './aws-kms-schema.ts';
import type { Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { KeyVersionInfo } from '../kek.ts';
import { unlessMissing } from '../key-missing.ts';
import { AWS_KMS_SERVICE, type AwsKms } from './aws-kms-client.ts';

/** On a key: the id of the key it replaced, so older keys are found again after the alias moved. */
export const PREVIOUS_KEY_TAG = 'kms-broker:previous-key';
export const BACKEND_TAG = 'kms-broker:backend';
/** Bound on the walk along previous-key tags (a loop in hand-set tags ends it too). */
const MAX_PREVIOUS_KEYS = 64;

export type Described = KeyMetadata & { KeyId: string; Arn: string; CreationDate: Date };

export class AwsKmsVersions {
  readonly #backend: string;
  readonly #config: AwsKmsBackendConfig;
  readonly #kms: AwsKms;
  readonly #logger: Logger;
  /** `arn:<partition>:kms:<region>:<account>:key/`, learnt from the first key described. */
  #keyArnPrefix: string | undefined;

  constructor(config: AwsKmsBackendConfig, kms: AwsKms, logger: Logger) {
    this.#backend = config.name;
    this.#config = config;
    this.#kms = kms;
    this.#logger = logger;
  }

  /** The current key, the keys it replaced (by tag) and the listed keys; the current one last. */
  async list(deadline: Deadline): Promise<KeyVersionInfo[]> {
    const current = await this.describe(this.#config.key, deadline);
    if (current === undefined) return [];
    const found = new Map<string, Described>([[current.KeyId, current]]);
    let key: Described | undefined = current;
    for (let step = 0; key !== undefined && step < MAX_PREVIOUS_KEYS; step++) {
      const previous = await this.#previousKeyId(key.KeyId, deadline);
      key =
        previous === undefined || found.has(previous) ? undefined : await this.describe(previous, deadline);
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
  async create(deadline: Deadline): Promise<KeyVersionInfo> {
    const { key, rotation } = this.#config;
    const current = await this.describe(key, deadline);
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

  /** The key the configured key or alias names, which must be Enabled, as a version. */
  async current(deadline: Deadline): Promise<KeyVersionInfo> {
    return this.#info(await this.#enabledCurrent(deadline));
  }

  /** The key's metadata, or undefined when AWS has no such key or alias. */
  async describe(keyRef: string, deadline: Deadline): Promise<Described | undefined> {
    const response = await unlessMissing(
      this.#kms.call(deadline, `kms:DescribeKey on ${keyRef}`, (kms, abortSignal) =>
        kms.send(new DescribeKeyCommand({ KeyId: keyRef }), { abortSignal }),
      ),
    );
    return response === undefined ? undefined : this.#described(response.KeyMetadata);
  }

  /** The ARN a version stands for, which every Encrypt and Decrypt names. */
  arnOf(version: string): string {
    if (version.startsWith('arn:')) return version;
    if (this.#keyArnPrefix === undefined) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.#backend}: the account of the ${AWS_KMS_SERVICE} keys is not known yet`,
        'NOT_OPEN',
      );
    }
    return this.#keyArnPrefix + version;
  }

  async #enabledCurrent(deadline: Deadline): Promise<Described> {
    const current = await this.describe(this.#config.key, deadline);
    if (current === undefined) {
      throw new BrokerError(
        'KEY_MISSING',
        `backend ${this.#backend}: AWS KMS has no key ${this.#config.key}`,
        'NotFoundException',
      );
    }
    if (current.KeyState !== 'Enabled') {
      throw new BrokerError(
        'BACKEND_REJECTED',
        `backend ${this.#backend}: AWS KMS key ${current.Arn} is ${current.KeyState ?? 'not enabled'}`,
        `KeyState_${current.KeyState ?? 'Unknown'}`,
      );
    }
    return current;
  }

  async #previousKeyId(keyId: string, deadline: Deadline): Promise<string | undefined> {
    const response = await this.#kms.call(
      deadline,
      `kms:ListResourceTags on ${this.arnOf(keyId)}`,
      (kms, abortSignal) => kms.send(new ListResourceTagsCommand({ KeyId: keyId }), { abortSignal }),
    );
    return response.Tags?.find(tag => tag.TagKey === PREVIOUS_KEY_TAG)?.TagValue;
  }

  /** rotation.keys as AWS describes them, in config order; keys AWS no longer has are left out. */
  async #listedKeys(deadline: Deadline): Promise<Described[]> {
    const described = await Promise.all(this.#config.rotation.keys.map(key => this.describe(key, deadline)));
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
    const tags = [{ TagKey: BACKEND_TAG, TagValue: this.#backend }];
    if (previousKeyId !== undefined) tags.push({ TagKey: PREVIOUS_KEY_TAG, TagValue: previousKeyId });
    const response = await this.#kms.call(deadline, 'kms:CreateKey and kms:TagResource', (kms, abortSignal) =>
      kms.send(
        new CreateKeyCommand({
          Description: `kms-broker backend ${this.#backend}: key-encryption key`,
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
        `backend ${this.#backend}: AWS KMS described a key without id, ARN or creation date`,
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

  #cannotRotate(why: string): BrokerError {
    return new BrokerError(
      'BACKEND_REJECTED',
      `backend ${this.#backend}: cannot rotate through the broker: ${why} (see docs/backends/aws-kms.md)`,
    );
  }
}

/** UpdateAlias and CreateAlias take the alias name, not its ARN. */
function aliasName(key: string): string {
  return key.slice(key.indexOf('alias/'));
}
