// HashiCorp Vault / OpenBao Transit backend. One Vault call per wrap or unwrap, none per
// Status. Wraps pin `key_version` to the registry's write version, so the version Status
// advertises is the version that wraps whatever happens in Vault meanwhile, and bind the
// envelope header as `associated_data`. Rotations done in Vault itself are offered to the
// broker through `externalRotation`, which adopts them once they are stable.
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import type { VaultTransitBackendConfig } from './vault-transit-schema.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { BackendDeps } from '../backend-kind.ts';
import { VaultAuth, type Need } from './vault-auth.ts';
import { createRemoteCaller, type RemoteCaller } from '../remote-caller.ts';
import {
  createVaultHttp,
  NO_MOUNT,
  vaultFailures,
  vaultService,
  vaultTls,
  type VaultHttp,
} from './vault-http.ts';
import { createTransitHotPath, type TransitHotPath } from './transit-hot-path.ts';
import type { Deadline } from '../../deadline.ts';

const TRANSIT_MECHANISM = 'transit';
const TRANSIT_KEY_TYPE = 'aes256-gcm96';

interface KeyResponse {
  data?: {
    latest_version?: number;
    min_decryption_version?: number;
    keys?: Record<string, number | string>;
  };
}
interface EncryptResponse {
  data?: { ciphertext?: string };
}
interface DecryptResponse {
  data?: { plaintext?: string };
}

export class VaultTransitBackend implements KekBackend {
  readonly type = 'vault-transit';
  readonly mechanism = TRANSIT_MECHANISM;
  readonly autoCreateOption = 'createIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly externalRotation: ExternalRotation;
  readonly #config: VaultTransitBackendConfig;
  readonly #caller: RemoteCaller;
  readonly #http: VaultHttp;
  /** Encrypt and decrypt, the calls every KMS call makes; node-vault carries the rest. */
  readonly #hotPath: TransitHotPath;
  readonly #auth: VaultAuth;
  readonly #logger: Logger;
  readonly #paths: { keys: string; encrypt: string; decrypt: string; rotate: string };
  /** Versions below this cannot decrypt in Vault; known from the last key read. */
  #minDecryptionVersion = 1;

  constructor(config: VaultTransitBackendConfig, deps: BackendDeps) {
    this.#config = config;
    this.name = config.name;
    this.autoCreate = config.createIfMissing;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#caller = createRemoteCaller({
      backend: config.name,
      service: vaultService(config.address),
      maxConcurrency: config.maxConcurrency,
      requestTimeoutMs: config.requestTimeoutMs,
      failures: vaultFailures,
    });
    const tls = vaultTls(config, deps.readFile);
    this.#http = createVaultHttp(config, this.#caller, tls);
    this.#hotPath = createTransitHotPath(config, this.#caller, tls, () => this.#http.token());
    this.#auth = new VaultAuth(this.#http, config, { readSecret: deps.readSecret, logger: this.#logger });
    const { mount, key } = config;
    this.#paths = {
      keys: `${mount}/keys/${key}`,
      encrypt: `${mount}/encrypt/${key}`,
      decrypt: `${mount}/decrypt/${key}`,
      rotate: `${mount}/keys/${key}/rotate`,
    };
    this.externalRotation = {
      intervalMs: config.rotationPoll.intervalMs,
      stableForMs: config.rotationPoll.stableForMs,
      latest: async deadline => {
        const versions = await this.listVersions(deadline);
        const latest = versions[versions.length - 1];
        if (latest === undefined)
          throw new BrokerError('KEY_MISSING', `backend ${this.name}: the Transit key has no version`);
        return latest;
      },
    };
  }

  async open(): Promise<void> {
    await this.#auth.login();
  }

  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    let response: KeyResponse;
    try {
      response = await this.#request({ capability: 'read', path: this.#paths.keys }, () =>
        this.#http.read<KeyResponse>(this.#paths.keys, deadline),
      );
    } catch (error) {
      // No key: none of its versions exist (createIfMissing may make one). No mount: a wrong
      // `mount:` or a disabled engine, which no key creation can mend.
      if (error instanceof BrokerError && error.code === 'KEY_MISSING' && error.causeName !== NO_MOUNT)
        return [];
      throw error;
    }
    const data = response.data ?? {};
    this.#minDecryptionVersion = data.min_decryption_version ?? 1;
    return Object.entries(data.keys ?? {})
      .map(([version, created]) => ({ number: Number(version), created }))
      .filter(entry => Number.isInteger(entry.number) && entry.number >= this.#minDecryptionVersion)
      .sort((a, b) => a.number - b.number)
      .map(entry => ({
        version: String(entry.number),
        fingerprint: this.#fingerprint(entry.number, entry.created),
        createdAt: toIso(entry.created),
      }));
  }

  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const existing = await this.listVersions(deadline);
    if (existing.length === 0) {
      await this.#request({ capability: 'create', path: this.#paths.keys }, () =>
        this.#http.write(this.#paths.keys, { type: TRANSIT_KEY_TYPE }, deadline),
      );
      this.#logger.info({ key: this.#config.key }, 'created Transit key');
    } else {
      await this.#request({ capability: 'update', path: this.#paths.rotate }, () =>
        this.#http.write(this.#paths.rotate, {}, deadline),
      );
    }
    const versions = await this.listVersions(deadline);
    const latest = versions[versions.length - 1];
    if (latest === undefined)
      throw new BrokerError('KEY_MISSING', `backend ${this.name}: the Transit key has no version`);
    this.#logger.info({ version: latest.version }, 'new Transit key version');
    return latest;
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    const body = {
      plaintext: request.plaintext.toString('base64'),
      key_version: Number(request.keyVersion),
      associated_data: request.aad.toString('base64'),
    };
    const response = await this.#request({ capability: 'update', path: this.#paths.encrypt }, () =>
      this.#hotPath.post<EncryptResponse>(this.#paths.encrypt, body, request.deadline),
    ).catch((error: unknown) => {
      if (error instanceof BrokerError && error.code === 'BACKEND_REJECTED') {
        throw new BrokerError(
          'BACKEND_REJECTED',
          `backend ${this.name}: Vault refused to encrypt with key version ${request.keyVersion}; check min_encryption_version and that the key supports associated data`,
          'HTTP_400',
        );
      }
      throw error;
    });
    const ciphertext = response.data?.ciphertext;
    if (ciphertext === undefined || !ciphertext.startsWith(`vault:v${request.keyVersion}:`)) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name}: Vault returned an unexpected ciphertext`,
        'BAD_RESPONSE',
      );
    }
    return Buffer.from(ciphertext, 'utf8');
  }

  async unwrap(request: UnwrapRequest): Promise<Buffer> {
    const ciphertext = request.wrapped.toString('utf8');
    // The version inside Transit's ciphertext must be the one the (authenticated) header names.
    if (request.mechanism !== TRANSIT_MECHANISM || !ciphertext.startsWith(`vault:v${request.keyVersion}:`)) {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name}: the wrapped key is not a Transit ciphertext of version ${request.keyVersion}`,
      );
    }
    if (Number(request.keyVersion) < this.#minDecryptionVersion) {
      throw new BrokerError(
        'KEY_VERSION_RETIRED',
        `backend ${this.name}: Transit key version ${request.keyVersion} is below the key's min_decryption_version (${this.#minDecryptionVersion})`,
      );
    }
    const body = { ciphertext, associated_data: request.aad.toString('base64') };
    const response = await this.#request({ capability: 'update', path: this.#paths.decrypt }, () =>
      this.#hotPath.post<DecryptResponse>(this.#paths.decrypt, body, request.deadline),
    ).catch((error: unknown) => {
      if (error instanceof BrokerError && error.code === 'BACKEND_REJECTED') {
        throw new BrokerError(
          'INVALID_CIPHERTEXT',
          `backend ${this.name}: Vault could not decrypt the wrapped key (tampered, or from another key)`,
          'HTTP_400',
        );
      }
      throw error;
    });
    const plaintext = response.data?.plaintext;
    if (plaintext === undefined) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name}: Vault returned no plaintext`,
        'BAD_RESPONSE',
      );
    }
    return Buffer.from(plaintext, 'base64');
  }

  /** One key read: proves reachability, unsealed state, a valid token and the key's presence. */
  async probe(deadline: Deadline): Promise<void> {
    const versions = await this.listVersions(deadline);
    if (versions.length === 0)
      throw new BrokerError(
        'KEY_MISSING',
        `backend ${this.name}: Transit key ${this.#config.key} is gone`,
        'KEY_GONE',
      );
  }

  async close(): Promise<void> {
    this.#auth.close();
    this.#http.close();
    await this.#hotPath.close();
  }

  /** Runs a Vault request with 403 re-login, and maps failures into the broker's catalog. */
  async #request<T>(need: Need, request: () => Promise<T>): Promise<T> {
    try {
      return await this.#auth.call(need, request);
    } catch (error) {
      throw this.#caller.brokerError(error, {
        permission: `"${need.capability}" on path "${need.path}"`,
        // Vault's 404 and 400 say which path it has nothing at, or refused.
        refine: failure => {
          if (failure.cause === NO_MOUNT) {
            const { mount } = this.#config;
            return new BrokerError(
              'KEY_MISSING',
              `backend ${this.name}: Vault has no secrets engine mounted at ${mount}/; enable the transit engine there (bao secrets enable -path=${mount} transit), or correct mount: in the config`,
              failure.cause,
            );
          }
          if (failure.kind === 'not-found')
            return new BrokerError(
              'KEY_MISSING',
              `backend ${this.name}: Vault has nothing at ${need.path}; the Transit key ${this.#config.key} is missing`,
              failure.cause,
            );
          if (failure.kind === 'rejected')
            return new BrokerError(
              'BACKEND_REJECTED',
              `backend ${this.name}: Vault rejected the request to ${need.path}`,
              failure.cause,
            );
          return undefined;
        },
      });
    }
  }

  /** Identity of one Transit key version: namespace, mount, key, version and creation time. */
  #fingerprint(version: number, created: number | string): string {
    const { namespace, mount, key } = this.#config;
    return `vault-transit:${namespace ?? ''}/${mount}/${key}:${version}:${String(created)}`;
  }
}

function toIso(created: number | string): string | undefined {
  const date = typeof created === 'number' ? new Date(created * 1000) : new Date(created);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}
