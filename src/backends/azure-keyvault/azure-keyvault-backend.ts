// Azure Key Vault / Managed HSM backend. The KEK is a Key Vault key (RSA, or AES on Managed
// HSM); every wrap names the exact key version the broker's key_id advertises, and that
// 32-hex version id is what the envelope records. One HTTP call per wrap or unwrap (the
// SDK's key GET is skipped), one key read per probe, never a wrap. Rotations done in the
// vault are offered to the broker through `externalRotation`, which adopts them once stable.
import type { KeyProperties, KeyWrapAlgorithm } from '@azure/keyvault-keys';
import type { AzureKeyVaultBackendConfig } from './azure-keyvault-schema.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { BackendDeps } from '../backend-kind.ts';
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import { unlessMissing } from '../key-missing.ts';
import { bindHeader, unbindHeader } from '../header-digest.ts';
import {
  createKeyVault,
  CREATE,
  LIST,
  READ,
  UNWRAP,
  VERSION_PATTERN,
  WRAP,
  type KeyVault,
} from './azure-keyvault-client.ts';
import type { Deadline } from '../../deadline.ts';

/** A bound on listing pages (25 versions each), so a runaway listing cannot loop forever. */
const MAX_VERSION_PAGES = 400;

export class AzureKeyVaultBackend implements KekBackend {
  readonly type = 'azure-keyvault';
  readonly autoCreateOption = 'createIfMissing';
  readonly name: string;
  readonly mechanism: KeyWrapAlgorithm;
  readonly autoCreate: boolean;
  readonly externalRotation: ExternalRotation;
  readonly #config: AzureKeyVaultBackendConfig;
  readonly #logger: Logger;
  readonly #vault: KeyVault;

  constructor(config: AzureKeyVaultBackendConfig, deps: BackendDeps) {
    this.#config = config;
    this.name = config.name;
    this.mechanism = config.algorithm;
    this.autoCreate = config.createIfMissing;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#vault = createKeyVault(config, deps);
    this.externalRotation = {
      intervalMs: config.rotationPoll.intervalMs,
      stableForMs: config.rotationPoll.stableForMs,
      latest: deadline => this.#current(deadline),
    };
  }

  open(): Promise<void> {
    this.#vault.open();
    return Promise.resolve();
  }

  /** Every version, oldest first, with the one the vault calls current last. */
  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    const keys = this.#vault.keys();
    const listed = await unlessMissing(
      this.#vault.call(deadline, LIST, async options => {
        const all: KeyProperties[] = [];
        let pages = 0;
        for await (const page of keys.listPropertiesOfKeyVersions(this.#config.keyName, options).byPage()) {
          all.push(...page);
          if (++pages >= MAX_VERSION_PAGES) break;
        }
        return all;
      }),
    );
    if (listed === undefined) return [];
    const current = await unlessMissing(this.#current(deadline));
    if (current === undefined) return [];
    // Creation times have whole-second resolution: the vault's own choice settles ties.
    return listed
      .filter(properties => properties.version !== undefined && VERSION_PATTERN.test(properties.version))
      .map(properties => this.#info(properties))
      .filter(info => info.version !== current.version)
      .sort((a, b) => (a.createdAt ?? '').localeCompare(b.createdAt ?? ''))
      .concat(current);
  }

  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const keys = this.#vault.keys();
    const { keyName, algorithm, rsaKeySize, hsm } = this.#config;
    const keyOps = ['wrapKey' as const, 'unwrapKey' as const];
    const created = await this.#vault.call(deadline, CREATE, options =>
      algorithm === 'A256KW'
        ? keys.createOctKey(keyName, { ...options, hsm: true, keySize: 256, keyOps })
        : keys.createRsaKey(keyName, { ...options, hsm, keySize: rsaKeySize, keyOps }),
    );
    const info = this.#info(created.properties);
    this.#logger.info({ version: info.version }, 'new Key Vault key version');
    return info;
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    const client = this.#vault.crypto(request.keyVersion);
    // RSA-OAEP and AES-KW take no associated data: the wrap carries the header's digest instead.
    const payload = bindHeader(request.plaintext, request.aad);
    const wrapped = await this.#vault.call(request.deadline, WRAP, options =>
      client.wrapKey(this.mechanism, payload, options),
    );
    return Buffer.from(wrapped.result);
  }

  async unwrap(request: UnwrapRequest): Promise<Buffer> {
    if (request.mechanism !== 'RSA-OAEP-256' && request.mechanism !== 'A256KW') {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name}: the envelope names mechanism ${request.mechanism}, which Key Vault does not unwrap`,
      );
    }
    const algorithm = request.mechanism;
    const client = this.#vault.crypto(request.keyVersion);
    const unwrapped = await this.#vault
      .call(request.deadline, UNWRAP, options => client.unwrapKey(algorithm, request.wrapped, options))
      .catch((error: unknown) => {
        // Key Vault answers 400 to a wrapped key it cannot open.
        if (error instanceof BrokerError && error.code === 'BACKEND_REJECTED')
          throw this.#invalidCiphertext();
        throw error;
      });
    // The digest proves the wrap was made for this very envelope header.
    const seed = unbindHeader(Buffer.from(unwrapped.result), request.aad);
    if (seed === undefined) throw this.#invalidCiphertext();
    return seed;
  }

  /** One key read: reachability, a valid credential, the get permission and the key's presence. */
  async probe(deadline: Deadline): Promise<void> {
    await this.#current(deadline);
  }

  close(): Promise<void> {
    this.#vault.close();
    return Promise.resolve();
  }

  /** The version the vault itself calls current. */
  async #current(deadline: Deadline): Promise<KeyVersionInfo> {
    const keys = this.#vault.keys();
    const key = await this.#vault.call(deadline, READ, options => keys.getKey(this.#config.keyName, options));
    return this.#info(key.properties);
  }

  #invalidCiphertext(): BrokerError {
    return new BrokerError(
      'INVALID_CIPHERTEXT',
      `backend ${this.name}: Key Vault could not unwrap the key for this envelope (tampered, or from another key or envelope)`,
    );
  }

  /** Identity of one version: vault, key, version id and creation time (a recreated key differs). */
  #info(properties: KeyProperties): KeyVersionInfo {
    const version = properties.version ?? '';
    const created = properties.createdOn;
    const host = new URL(this.#config.vaultUrl).host;
    return {
      version,
      fingerprint: `azure-keyvault:${host}/${this.#config.keyName}/${version}:${created === undefined ? '' : created.getTime() / 1000}`,
      createdAt: created?.toISOString(),
    };
  }
}
