// Alibaba Cloud KMS backend. One Encrypt per wrap, one Decrypt per unwrap, a DescribeKey
// (a read) per probe. Versions are the service's KeyVersionIds. Encrypt cannot be pinned
// to a version (the service always uses the key's primary version), so a wrap records the
// registry's write version and checks what the service used: they differ only between a
// rotation done in the service and its adoption by the rotation watch, and since Alibaba
// cannot disable a single version, a seed wrapped meanwhile still decrypts for as long as
// the key exists. The envelope header is bound as EncryptionContext.
import type { AlibabaKmsBackendConfig } from './alibaba-kms-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import { startDeadline, type Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { BackendCallError } from '../call-policy.ts';
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import { createRemoteCaller, type Need, type RemoteCaller } from '../remote-caller.ts';
import { createAlibabaKmsClient, type AlibabaKmsClient, type KeyVersionEntry } from './alibaba-kms-client.ts';
import { createAlibabaCredential } from './alibaba-kms-credentials.ts';
import { ALIBABA_KMS_SERVICE as SERVICE, alibabaFailures } from './alibaba-kms-errors.ts';

const ALIBABA_KMS_MECHANISM = 'alibaba-kms';
/** The EncryptionContext entry that carries the envelope header (base64). */
export const HEADER_CONTEXT_KEY = 'kms-broker-header';
const OPEN_TIMEOUT_MS = 10000;
/** Distinct version mismatches warned about; a few suffice to tell the operator. */
const MAX_MISMATCH_WARNINGS = 16;

export class AlibabaKmsBackend implements KekBackend {
  readonly type = 'alibaba-kms';
  readonly mechanism = ALIBABA_KMS_MECHANISM;
  /**
   * An Alibaba key always holds a version (listVersions never answers empty), so there is
   * never a version 1 for the broker to create: the key itself is made in the service.
   */
  readonly autoCreate = false;
  readonly autoCreateOption = 'keyId';
  readonly name: string;
  readonly externalRotation: ExternalRotation;
  readonly #config: AlibabaKmsBackendConfig;
  readonly #caller: RemoteCaller;
  readonly #client: AlibabaKmsClient;
  readonly #logger: Logger;
  readonly #mismatchesWarned = new Set<string>();
  /** The key's own ID, resolved from an alias at open(): every call names this key. */
  #keyId: string;
  #arn: string;

  constructor(config: AlibabaKmsBackendConfig, deps: { readSecret: SecretReader; logger: Logger }) {
    this.#config = config;
    this.name = config.name;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#caller = createRemoteCaller({
      backend: config.name,
      service: SERVICE,
      maxConcurrency: config.maxConcurrency,
      requestTimeoutMs: config.requestTimeoutMs,
      failures: alibabaFailures,
    });
    this.#client = createAlibabaKmsClient(
      config,
      createAlibabaCredential(config, deps.readSecret),
      this.#caller,
    );
    this.#keyId = config.keyId;
    this.#arn = `acs:kms:${config.regionId}:*:key/${config.keyId}`;
    this.externalRotation = {
      intervalMs: config.rotationPoll.intervalMs,
      stableForMs: config.rotationPoll.stableForMs,
      latest: deadline => this.#primaryVersion(deadline),
    };
  }

  async open(): Promise<void> {
    try {
      await this.#client.checkCredentials();
    } catch (error) {
      // An unreadable file is already a precise error; a metadata service down is an outage.
      if (error instanceof BrokerError) throw error;
      if (error instanceof BackendCallError && error.kind === 'unavailable')
        throw this.#caller.brokerError(error, this.#need('credentials'));
      const source =
        this.#config.credentials === undefined
          ? 'the default chain (ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET, OIDC, CLI profile, credentials file, ECS RAM role)'
          : 'credentials.accessKeyIdFile and credentials.accessKeySecretFile';
      throw new BrokerError(
        'BACKEND_AUTH_FAILED',
        `backend ${this.name}: no Alibaba Cloud credentials could be obtained from ${source}`,
        'NO_CREDENTIALS',
      );
    }
    const metadata = await this.#request('kms:DescribeKey', () =>
      this.#client.describeKey(this.#config.keyId, startDeadline(OPEN_TIMEOUT_MS)),
    );
    if (metadata.KeyId === undefined || metadata.KeyId === '')
      throw badResponse(this.name, 'DescribeKey returned no KeyId');
    if (metadata.KeyUsage !== undefined && metadata.KeyUsage !== 'ENCRYPT/DECRYPT') {
      throw new BrokerError(
        'BACKEND_REJECTED',
        `backend ${this.name}: Alibaba Cloud KMS key ${this.#config.keyId} has KeyUsage ${metadata.KeyUsage}; a symmetric ENCRYPT/DECRYPT key is needed`,
        'KEY_USAGE',
      );
    }
    this.#keyId = metadata.KeyId;
    this.#arn = metadata.Arn ?? `acs:kms:${this.#config.regionId}:*:key/${metadata.KeyId}`;
    this.#logger.info(
      { keyId: this.#keyId, primaryVersion: metadata.PrimaryKeyVersion },
      'Alibaba Cloud KMS key found',
    );
  }

  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    const entries = await this.#request('kms:ListKeyVersions', () =>
      this.#client.listKeyVersions(this.#keyId, deadline),
    );
    // An Alibaba key always has a version; none listed means the answer is not to be trusted.
    if (entries.length === 0) throw badResponse(this.name, 'ListKeyVersions listed no version of the key');
    return entries
      .flatMap(entry => {
        const info = this.#toInfo(entry);
        return info === undefined ? [] : [info];
      })
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.version.localeCompare(b.version));
  }

  /** CreateKeyVersion: the new version becomes the key's primary version in the service. */
  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const created = await this.#request('kms:CreateKeyVersion', () =>
      this.#client.createKeyVersion(this.#keyId, deadline),
    );
    const info = this.#toInfo(created);
    if (info === undefined) throw badResponse(this.name, 'CreateKeyVersion returned no usable key version');
    this.#logger.info({ version: info.version }, 'new Alibaba Cloud KMS key version');
    return info;
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    const result = await this.#request('kms:Encrypt', () =>
      this.#client.encrypt(
        this.#keyId,
        request.plaintext.toString('base64'),
        headerContext(request.aad),
        request.deadline,
      ),
    );
    const blob = strictBase64(result.CiphertextBlob);
    if (blob === undefined || result.KeyId !== this.#keyId || typeof result.KeyVersionId !== 'string')
      throw badResponse(this.name, 'Encrypt returned an unexpected answer');
    if (result.KeyVersionId !== request.keyVersion)
      this.#warnMismatch(request.keyVersion, result.KeyVersionId);
    return blob;
  }

  async unwrap(request: UnwrapRequest): Promise<Buffer> {
    if (request.mechanism !== ALIBABA_KMS_MECHANISM) {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name}: the wrapped key was made by mechanism ${request.mechanism}, not ${ALIBABA_KMS_MECHANISM}`,
      );
    }
    const result = await this.#request(
      'kms:Decrypt',
      () =>
        this.#client.decrypt(
          request.wrapped.toString('base64'),
          headerContext(request.aad),
          request.deadline,
        ),
      // Decrypt names no key: a 400 means the blob or its context is not authentic.
      failure => (failure.kind === 'rejected' ? invalidCiphertext(this.name, failure.cause) : undefined),
    );
    // A ciphertext of another key this account may use is still not ours to open.
    if (result.KeyId !== this.#keyId) throw invalidCiphertext(this.name, 'FOREIGN_KEY');
    const plaintext = strictBase64(result.Plaintext);
    if (plaintext === undefined) throw badResponse(this.name, 'Decrypt returned no plaintext');
    return plaintext;
  }

  /** DescribeKey: reachability, credentials, permission and an Enabled key, without a crypto call. */
  async probe(deadline: Deadline): Promise<void> {
    const metadata = await this.#request('kms:DescribeKey', () =>
      this.#client.describeKey(this.#keyId, deadline),
    );
    if (metadata.KeyState !== 'Enabled') {
      throw new BrokerError(
        'BACKEND_REJECTED',
        `backend ${this.name}: Alibaba Cloud KMS key ${this.#keyId} is ${metadata.KeyState ?? 'in an unknown state'}, not Enabled`,
        'KEY_STATE',
      );
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The key's primary version (what Encrypt uses now), as rotations in the service set it. */
  async #primaryVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const metadata = await this.#request('kms:DescribeKey', () =>
      this.#client.describeKey(this.#keyId, deadline),
    );
    const versions = await this.listVersions(deadline);
    const primary = versions.find(version => version.version === metadata.PrimaryKeyVersion);
    if (primary === undefined) throw badResponse(this.name, 'the primary key version is not listed');
    return primary;
  }

  /**
   * Runs a service call and maps its failure into the broker's catalog, naming the RAM
   * action a permission error needs. `special` handles kinds that mean more for one call.
   */
  async #request<T>(
    action: string,
    run: () => Promise<T>,
    special?: (failure: BackendCallError) => BrokerError | undefined,
  ): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw this.#caller.brokerError(error, this.#need(action, special));
    }
  }

  /** What a call of `action` needs; a missing key names the configured key and region. */
  #need(action: string, special?: (failure: BackendCallError) => BrokerError | undefined): Need {
    return {
      permission: `${action} on ${this.#arn}`,
      refine: failure =>
        special?.(failure) ??
        (failure.kind === 'not-found'
          ? new BrokerError(
              'KEY_MISSING',
              `backend ${this.name}: Alibaba Cloud KMS has no key ${this.#config.keyId} in region ${this.#config.regionId}`,
              failure.cause,
            )
          : undefined),
    };
  }

  #toInfo(entry: KeyVersionEntry): (KeyVersionInfo & { createdAt: string }) | undefined {
    const version = entry.KeyVersionId;
    const created = new Date(entry.CreationDate ?? '');
    if (version === undefined || version === '' || Number.isNaN(created.getTime())) return undefined;
    const createdAt = created.toISOString();
    // KeyVersionIds are unique UUIDs; region, key and creation time make the identity plain.
    return {
      version,
      fingerprint: `alibaba-kms:${this.#config.regionId}/${this.#keyId}/${version}@${createdAt}`,
      createdAt,
    };
  }

  #warnMismatch(recorded: string, used: string): void {
    const pair = `${recorded}>${used}`;
    if (this.#mismatchesWarned.has(pair) || this.#mismatchesWarned.size >= MAX_MISMATCH_WARNINGS) return;
    this.#mismatchesWarned.add(pair);
    this.#logger.warn(
      { recordedVersion: recorded, serviceVersion: used, stableForMs: this.#config.rotationPoll.stableForMs },
      'Alibaba Cloud KMS encrypted with its new primary version; the broker adopts it after rotationPoll.stableForMs',
    );
  }
}

/** The envelope header as EncryptionContext: a JSON map of strings, so base64 under one key. */
function headerContext(aad: Buffer): Record<string, string> {
  return { [HEADER_CONTEXT_KEY]: aad.toString('base64') };
}

/** Base64 in its one canonical form, or undefined. */
function strictBase64(text: unknown): Buffer | undefined {
  if (typeof text !== 'string' || text === '') return undefined;
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : undefined;
}

function invalidCiphertext(backend: string, cause: string): BrokerError {
  return new BrokerError(
    'INVALID_CIPHERTEXT',
    `backend ${backend}: Alibaba Cloud KMS could not decrypt the wrapped key (tampered, or from another key)`,
    cause,
  );
}

function badResponse(backend: string, what: string): BrokerError {
  return new BrokerError('BACKEND_UNAVAILABLE', `backend ${backend}: ${what}`, 'BAD_RESPONSE');
}
