// AWS KMS backend. AWS's own rotation of a key's material is invisible to callers, so here a
// key version is a whole KMS key: the envelope records the key's id (its ARN when the key lives
// under another account or region than the backend's), Decrypt names that key, and old keys
// keep decrypting after the alias has moved on. The envelope header is bound to each wrap as
// EncryptionContext. Rotation through the broker creates a key (or takes the next listed one)
// and moves the alias; an alias moved in AWS itself is adopted through `externalRotation`.
import { DecryptCommand, EncryptCommand } from '@aws-sdk/client-kms';
import { isAwsAlias, type AwsKmsBackendConfig } from './aws-kms-schema.ts';
import { startDeadline, type Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import { createAwsKms, type AwsKms } from './aws-kms-client.ts';
import { AwsKmsVersions } from './aws-kms-versions.ts';

export const AWS_KMS_MECHANISM = 'aws-kms';
/** The EncryptionContext entry that carries the envelope header (base64). */
export const HEADER_CONTEXT_KEY = 'kms-broker:header';
const OPEN_TIMEOUT_MS = 10000;

export class AwsKmsBackend implements KekBackend {
  readonly type = 'aws-kms';
  readonly mechanism = AWS_KMS_MECHANISM;
  readonly autoCreateOption = 'createIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly externalRotation?: ExternalRotation;
  readonly #config: AwsKmsBackendConfig;
  readonly #kms: AwsKms;
  readonly #versions: AwsKmsVersions;

  constructor(config: AwsKmsBackendConfig, deps: { logger: Logger }) {
    this.#config = config;
    this.name = config.name;
    this.autoCreate = config.createIfMissing;
    this.#kms = createAwsKms(config);
    this.#versions = new AwsKmsVersions(config, this.#kms, deps.logger.child({ backend: config.name }));
    // Only an alias can move to another key; a key named by id or ARN never rotates in AWS.
    if (isAwsAlias(config.key)) {
      this.externalRotation = {
        intervalMs: config.rotationPoll.intervalMs,
        stableForMs: config.rotationPoll.stableForMs,
        latest: deadline => this.#versions.current(deadline),
      };
    }
  }

  /** One DescribeKey: fails start-up on refused credentials, not on a missing alias. */
  async open(): Promise<void> {
    await this.#versions.describe(this.#config.key, startDeadline(OPEN_TIMEOUT_MS));
  }

  listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    return this.#versions.list(deadline);
  }

  createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    return this.#versions.create(deadline);
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    const arn = this.#versions.arnOf(request.keyVersion);
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
    const arn = this.#versions.arnOf(request.keyVersion);
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
    await this.#versions.current(deadline);
  }

  close(): Promise<void> {
    this.#kms.close();
    return Promise.resolve();
  }
}

/** The bytes bound to a wrap, as EncryptionContext (a string map): deterministic base64. */
function headerContext(aad: Buffer): Record<string, string> {
  return { [HEADER_CONTEXT_KEY]: aad.toString('base64') };
}
