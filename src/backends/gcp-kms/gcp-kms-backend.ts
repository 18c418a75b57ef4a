// Google Cloud KMS backend. One Cloud KMS call per wrap or unwrap, a key read per probe and
// per rotation poll, never an Encrypt for health. Wraps name the CryptoKeyVersion the
// registry writes with (Cloud KMS accepts a version name in Encrypt for symmetric keys), so
// the version Status advertises is the version that wraps, whatever the primary is meanwhile;
// the envelope header is bound as additional authenticated data. Requests and responses
// carry CRC32C checksums so that corruption in transit is caught, and retried, not stored.
// A primary changed in Cloud KMS itself is offered to the broker through `externalRotation`.
import type { KeyManagementServiceClient, protos } from '@google-cloud/kms';
import type { GcpKmsBackendConfig } from './gcp-kms-schema.ts';
import { startDeadline, type Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { FileReader } from '../../file-reader.ts';
import type { Logger } from '../../log.ts';
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import { unlessMissing } from '../key-missing.ts';
import type { Need } from '../remote-caller.ts';
import { createGcpKmsCaller, type AttemptOptions, type GcpKmsCaller } from './gcp-kms-client.ts';
import { decrypt, encrypt, GCP_KMS_MECHANISM, type CryptoKeyAccess } from './gcp-kms-crypto.ts';
import { credentialError, GCP_KMS_SERVICE as SERVICE } from './gcp-kms-errors.ts';
import { splitKeyName, versionId, versionInfo } from './gcp-kms-versions.ts';

type CryptoKey = protos.google.cloud.kms.v1.ICryptoKey;
type CryptoKeyVersion = protos.google.cloud.kms.v1.ICryptoKeyVersion;

const OPEN_TIMEOUT_MS = 10000;
/** How often a version still being generated (HSM protection) is read again. */
const GENERATION_POLL_MS = 250;
/**
 * Versions whose key material exists. Disabled and destroy-scheduled ones cannot decrypt
 * until an operator enables or restores them, but their data must stay on the books.
 */
const LISTED_STATES: ReadonlySet<string> = new Set(['ENABLED', 'DISABLED', 'DESTROY_SCHEDULED']);

export class GcpKmsBackend implements KekBackend {
  readonly type = 'gcp-kms';
  readonly mechanism = GCP_KMS_MECHANISM;
  readonly autoCreateOption = 'createIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly externalRotation: ExternalRotation;
  readonly #config: GcpKmsBackendConfig;
  readonly #keyName: string;
  /** Created by open(). */
  #caller: GcpKmsCaller | undefined;
  readonly #logger: Logger;
  readonly #readFile: FileReader;
  /** What wraps and unwraps use: this key, through the caller open() creates. */
  readonly #key: CryptoKeyAccess;

  constructor(config: GcpKmsBackendConfig, deps: { readFile: FileReader; logger: Logger }) {
    this.name = config.name;
    this.autoCreate = config.createIfMissing;
    this.#config = config;
    this.#keyName = config.keyName;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#readFile = deps.readFile;
    this.#key = {
      backend: config.name,
      keyName: config.keyName,
      run: (deadline, need, request) => this.#run(deadline, need, request),
    };
    this.externalRotation = {
      intervalMs: config.rotationPoll.intervalMs,
      stableForMs: config.rotationPoll.stableForMs,
      latest: async deadline => this.#versionInfo(this.#primaryOf(await this.#requireKey(deadline))),
    };
  }

  async open(): Promise<void> {
    try {
      this.#caller ??= await createGcpKmsCaller(this.#config, this.#readFile);
      await this.#caller.checkCredentials(startDeadline(OPEN_TIMEOUT_MS));
    } catch (error) {
      throw credentialError(error, this.name, OPEN_TIMEOUT_MS);
    }
  }

  /** Version numbers in ascending order, except that the primary comes last: it writes first. */
  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    const key = await this.#findKey(deadline);
    if (key === undefined) return [];
    const [versions] = await this.#run(
      deadline,
      { permission: `cloudkms.cryptoKeyVersions.list on ${this.#keyName}` },
      (kms, options) => kms.listCryptoKeyVersions({ parent: this.#keyName }, options),
    );
    const primary = versionId(this.#keyName, key.primary?.name);
    return versions
      .filter(version => LISTED_STATES.has(String(version.state)))
      .map(version => ({ id: versionId(this.#keyName, version.name), version }))
      .filter((entry): entry is { id: number; version: CryptoKeyVersion } => entry.id !== undefined)
      .sort((a, b) => Number(a.id === primary) - Number(b.id === primary) || a.id - b.id)
      .map(entry => this.#versionInfo(entry.version));
  }

  /** A new version made primary; on a key that does not exist yet, the key itself. */
  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const key = await this.#findKey(deadline);
    let version: CryptoKeyVersion;
    if (key === undefined) {
      version = this.#primaryOf(await this.#createKey(deadline));
      this.#logger.info({ key: this.#keyName }, 'created Cloud KMS key');
    } else {
      const [created] = await this.#run(
        deadline,
        { permission: `cloudkms.cryptoKeyVersions.create on ${this.#keyName}` },
        (kms, options) =>
          kms.createCryptoKeyVersion({ parent: this.#keyName, cryptoKeyVersion: {} }, options),
      );
      version = await this.#untilGenerated(created, deadline);
      const id = this.#versionInfo(version).version;
      await this.#run(
        deadline,
        { permission: `cloudkms.cryptoKeys.update on ${this.#keyName}` },
        (kms, options) =>
          kms.updateCryptoKeyPrimaryVersion({ name: this.#keyName, cryptoKeyVersionId: id }, options),
      );
    }
    const info = this.#versionInfo(version);
    this.#logger.info({ version: info.version }, 'new Cloud KMS key version');
    return info;
  }

  wrap(request: WrapRequest): Promise<Buffer> {
    return encrypt(this.#key, request);
  }

  unwrap(request: UnwrapRequest): Promise<Buffer> {
    return decrypt(this.#key, request);
  }

  /** One key read: reachability, valid credentials, the key's presence and purpose. */
  async probe(deadline: Deadline): Promise<void> {
    await this.#requireKey(deadline);
  }

  async close(): Promise<void> {
    await this.#caller?.close();
  }

  /** The CryptoKey, or undefined when Cloud KMS has none by that name. */
  async #findKey(deadline: Deadline): Promise<CryptoKey | undefined> {
    const found = await unlessMissing(
      this.#run(deadline, { permission: `cloudkms.cryptoKeys.get on ${this.#keyName}` }, (kms, options) =>
        kms.getCryptoKey({ name: this.#keyName }, options),
      ),
    );
    if (found === undefined) return undefined;
    const [key] = found;
    if (key.purpose !== 'ENCRYPT_DECRYPT') {
      throw new BrokerError(
        'BACKEND_REJECTED',
        `backend ${this.name}: ${this.#keyName} has purpose ${String(key.purpose)}; kms-broker needs a symmetric ENCRYPT_DECRYPT key`,
        'KEY_PURPOSE',
      );
    }
    return key;
  }

  async #requireKey(deadline: Deadline): Promise<CryptoKey> {
    const key = await this.#findKey(deadline);
    if (key === undefined)
      throw new BrokerError(
        'KEY_MISSING',
        `backend ${this.name}: ${SERVICE} has no key ${this.#keyName}`,
        'KEY_GONE',
      );
    return key;
  }

  #primaryOf(key: CryptoKey): CryptoKeyVersion {
    if (key.primary?.name === undefined || key.primary.name === null)
      throw new BrokerError('KEY_MISSING', `backend ${this.name}: ${this.#keyName} has no primary version`);
    return key.primary;
  }

  async #createKey(deadline: Deadline): Promise<CryptoKey> {
    if (!this.autoCreate)
      throw new BrokerError('KEY_MISSING', `backend ${this.name}: ${SERVICE} has no key ${this.#keyName}`);
    const [keyRing, cryptoKeyId] = splitKeyName(this.#keyName);
    const need: Need = {
      permission: `cloudkms.cryptoKeys.create on ${keyRing}`,
      refine: failure =>
        failure.kind === 'not-found'
          ? new BrokerError(
              'KEY_MISSING',
              `backend ${this.name}: ${SERVICE} has no key ring ${keyRing}; create it first`,
            )
          : undefined,
    };
    const [key] = await this.#run(deadline, need, (kms, options) =>
      kms.createCryptoKey(
        {
          parent: keyRing,
          cryptoKeyId,
          cryptoKey: {
            purpose: 'ENCRYPT_DECRYPT',
            versionTemplate: { algorithm: 'GOOGLE_SYMMETRIC_ENCRYPTION' },
          },
        },
        options,
      ),
    );
    return { ...key, primary: await this.#untilGenerated(this.#primaryOf(key), deadline) };
  }

  /** HSM-protected versions are generated asynchronously: wait (within the deadline) until usable. */
  async #untilGenerated(version: CryptoKeyVersion, deadline: Deadline): Promise<CryptoKeyVersion> {
    let current = version;
    while (current.state === 'PENDING_GENERATION') {
      await new Promise(resolve => setTimeout(resolve, GENERATION_POLL_MS).unref());
      const name = String(current.name);
      [current] = await this.#run(
        deadline,
        { permission: `cloudkms.cryptoKeyVersions.get on ${name}` },
        (kms, options) => kms.getCryptoKeyVersion({ name }, options),
      );
    }
    if (current.state !== 'ENABLED') {
      throw new BrokerError(
        'BACKEND_REJECTED',
        `backend ${this.name}: the new key version ${String(current.name)} is ${String(current.state)}, not ENABLED`,
        'VERSION_STATE',
      );
    }
    return current;
  }

  async #run<T>(
    deadline: Deadline,
    need: Need,
    request: (kms: KeyManagementServiceClient, options: AttemptOptions) => Promise<T>,
  ): Promise<T> {
    if (this.#caller === undefined) throw new BrokerError('INTERNAL', `backend ${this.name} is not open`);
    return this.#caller.call(deadline, need, request);
  }

  #versionInfo(version: CryptoKeyVersion): KeyVersionInfo {
    return versionInfo(this.#keyName, version, this.name);
  }
}
