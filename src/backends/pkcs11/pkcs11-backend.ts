// PKCS#11 HSM backend on graphene-pk11. Each key version is its own secret key object in
// the token (key-versions.ts); wraps are AES-GCM (aes-gcm.ts) on a session pool.
import type graphene from 'graphene-pk11';
import type { KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import type { Pkcs11BackendConfig } from './pkcs11-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { classify, ckrName, type Pkcs11Failure } from './pkcs11-errors.ts';
import { SessionPool } from './session-pool.ts';
import { loadModule, type LoadedModule } from './module-cache.ts';
import type { Deadline } from '../../deadline.ts';
import { assertLoggedIn, closeQuietly, findSlot, openLoggedIn, openSession } from './token-session.ts';
import { KeyVersions } from './key-versions.ts';
import { AES_GCM_MECHANISM, invalidWrapped, openAesGcm, sealAesGcm } from './aes-gcm.ts';

const MAX_QUEUED_CALLS = 4096;

interface Lease {
  readonly session: graphene.Session;
  readonly generation: number;
}

export class Pkcs11Backend implements KekBackend {
  readonly type = 'pkcs11';
  readonly mechanism = AES_GCM_MECHANISM;
  readonly autoCreateOption = 'generateIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly #config: Pkcs11BackendConfig;
  readonly #readSecret: SecretReader;
  readonly #logger: Logger;
  #module: LoadedModule | undefined;
  #slot: graphene.Slot | undefined;
  #tokenSerial = '';
  /** Kept open for the backend's life: closing a token's last session logs the app out. */
  #anchor: graphene.Session | undefined;
  /** Bumped by every recovery; leases from an older generation are destroyed on release. */
  #generation = 0;
  #recovering: Promise<void> | undefined;
  readonly #versions: KeyVersions;
  readonly #pool: SessionPool<Lease>;

  constructor(config: Pkcs11BackendConfig, deps: { readSecret: SecretReader; logger: Logger }) {
    this.#config = config;
    this.name = config.name;
    this.autoCreate = config.generateIfMissing;
    this.#readSecret = deps.readSecret;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#versions = new KeyVersions({
      keyLabel: config.keyLabel,
      backendName: config.name,
      logger: this.#logger,
      tokenSerial: () => this.#tokenSerial,
    });
    this.#pool = new SessionPool<Lease>(
      {
        create: () => ({ session: this.#openSession(), generation: this.#generation }),
        destroy: lease => closeQuietly(lease.session),
      },
      config.sessions,
      MAX_QUEUED_CALLS,
    );
  }

  async open(): Promise<void> {
    this.#module = loadModule(this.#config.module);
    this.#connect();
    return Promise.resolve();
  }

  listVersions(): Promise<KeyVersionInfo[]> {
    return this.#recoverable(() => Promise.resolve(this.#versions.list(this.#requireAnchor())));
  }

  createVersion(): Promise<KeyVersionInfo> {
    return this.#recoverable(() => Promise.resolve(this.#versions.create(this.#requireAnchor())));
  }

  wrap(request: WrapRequest): Promise<Buffer> {
    return this.#withSession(request.deadline, 'wrap', async session =>
      sealAesGcm(session, this.#versions.key(session, request.keyVersion), request.plaintext, request.aad),
    );
  }

  unwrap(request: UnwrapRequest): Promise<Buffer> {
    const invalid = invalidWrapped(request, this.name);
    if (invalid !== undefined) return Promise.reject(invalid);
    return this.#withSession(request.deadline, 'unwrap', async session =>
      openAesGcm(session, this.#versions.key(session, request.keyVersion), request.wrapped, request.aad),
    );
  }

  /** C_GetSessionInfo on the anchor: no crypto, but it notices a lost login or device. */
  probe(): Promise<void> {
    return this.#recoverable(() => {
      assertLoggedIn(this.#requireAnchor());
      return Promise.resolve();
    });
  }

  async close(): Promise<void> {
    await this.#recovering;
    this.#pool.close();
    this.#versions.forget();
    if (this.#anchor !== undefined) closeQuietly(this.#anchor);
    this.#anchor = undefined;
    this.#module?.release();
    this.#module = undefined;
  }

  /** Finds the token, opens the anchor session and logs in. */
  #connect(): void {
    const slot = findSlot(this.#requireModule().module, this.#config);
    this.#slot = slot;
    this.#tokenSerial = slot.getToken().serialNumber.trim();
    this.#anchor = openLoggedIn(slot, this.#config, this.#readSecret);
  }

  #openSession(): graphene.Session {
    if (this.#slot === undefined)
      throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.name} is not open`);
    return openSession(this.#slot);
  }

  /**
   * Runs one crypto operation on a pooled session. A lost session, login or device is
   * recovered once and the operation retried; a second failure is UNAVAILABLE.
   */
  async #withSession<T>(
    deadline: Deadline,
    purpose: 'wrap' | 'unwrap',
    operation: (session: graphene.Session) => Promise<T>,
  ): Promise<T> {
    for (let attempt = 0; attempt < 2; attempt++) {
      await this.#recovering;
      let failure: Pkcs11Failure | undefined;
      let caught: unknown;
      let lease: Lease | undefined;
      try {
        // Opening a pooled session can itself fail when the token or library was lost.
        lease = await this.#pool.acquire(deadline.signal);
        return await operation(lease.session);
      } catch (error) {
        caught = error;
        failure = error instanceof BrokerError ? undefined : classify(error);
      } finally {
        if (lease !== undefined) {
          const stale = lease.generation !== this.#generation;
          this.#pool.release(lease, stale || isRecoverable(failure));
        }
      }
      if (failure === 'data' && purpose === 'unwrap') {
        throw new BrokerError(
          'INVALID_CIPHERTEXT',
          'the wrapped key failed authentication: tampered with, or wrapped under another key',
          ckrName(caught),
        );
      }
      if (attempt === 0 && isRecoverable(failure)) {
        await this.#recover(failure, ckrName(caught));
        continue;
      }
      throw this.#unavailable(caught);
    }
    throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.name}: the HSM did not recover`);
  }

  /** For anchor-session work (listing, key generation, probes): recover once, then fail. */
  async #recoverable<T>(operation: () => Promise<T>): Promise<T> {
    await this.#recovering;
    try {
      return await operation();
    } catch (error) {
      const failure = classify(error);
      if (!isRecoverable(failure)) throw this.#unavailable(error);
      await this.#recover(failure, ckrName(error));
      try {
        return await operation();
      } catch (retryError) {
        throw this.#unavailable(retryError);
      }
    }
  }

  #recover(failure: 'session' | 'login' | 'device', cause: string | undefined): Promise<void> {
    this.#recovering ??= (async () => {
      this.#logger.warn({ failure, cause }, 'recovering HSM connection');
      this.#generation++;
      this.#versions.forget();
      this.#pool.discardIdle();
      if (this.#anchor !== undefined) closeQuietly(this.#anchor);
      this.#anchor = undefined;
      if (failure === 'device') await this.#requireModule().reset(() => this.#pool.leased === 0);
      this.#connect();
    })().finally(() => {
      this.#recovering = undefined;
    });
    return this.#recovering.catch((error: unknown) => {
      // A wrong PIN discovered during recovery is as fatal as at start: never loop on it.
      throw error instanceof BrokerError ? error : this.#unavailable(error);
    });
  }

  #requireAnchor(): graphene.Session {
    if (this.#anchor === undefined) throw new Error('CKR_SESSION_HANDLE_INVALID: no anchor session');
    return this.#anchor;
  }

  #requireModule(): LoadedModule {
    if (this.#module === undefined)
      throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.name} is not open`);
    return this.#module;
  }

  #unavailable(error: unknown): BrokerError {
    if (error instanceof BrokerError) return error;
    const name = ckrName(error);
    return new BrokerError(
      'BACKEND_UNAVAILABLE',
      `backend ${this.name}: the HSM operation failed${name ? ` (${name})` : ''}`,
      name ?? 'HSM_ERROR',
    );
  }
}

function isRecoverable(failure: Pkcs11Failure | undefined): failure is 'session' | 'login' | 'device' {
  return failure === 'session' || failure === 'login' || failure === 'device';
}
