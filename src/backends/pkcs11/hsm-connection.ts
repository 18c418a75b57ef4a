// The backend's connection to its token: the loaded module, the logged-in anchor session
// and the pool of crypto sessions, and recovery when a session, the login or the device is
// lost. Every HSM call runs through withSession (crypto) or withAnchor (everything else).
import type graphene from 'graphene-pk11';
import type { Pkcs11BackendConfig } from './pkcs11-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { Deadline } from '../../deadline.ts';
import { classify, ckrName, type Pkcs11Failure } from './pkcs11-errors.ts';
import { SessionPool } from './session-pool.ts';
import { loadModule, type LoadedModule } from './module-cache.ts';
import { closeQuietly, findSlot, openLoggedIn, openSession } from './token-session.ts';

const MAX_QUEUED_CALLS = 4096;

interface Lease {
  readonly session: graphene.Session;
  readonly generation: number;
}

export interface HsmConnectionDeps {
  readonly readSecret: SecretReader;
  readonly logger: Logger;
  /** Called as each recovery starts, to drop what the lost connection made invalid. */
  readonly onRecover: () => void;
}

export class HsmConnection {
  readonly #config: Pkcs11BackendConfig;
  readonly #deps: HsmConnectionDeps;
  #module: LoadedModule | undefined;
  #slot: graphene.Slot | undefined;
  #tokenSerial = '';
  /** Kept open for the backend's life: closing a token's last session logs the app out. */
  #anchor: graphene.Session | undefined;
  /** Bumped by every recovery; leases from an older generation are destroyed on release. */
  #generation = 0;
  #recovering: Promise<void> | undefined;
  readonly #pool: SessionPool<Lease>;

  constructor(config: Pkcs11BackendConfig, deps: HsmConnectionDeps) {
    this.#config = config;
    this.#deps = deps;
    this.#pool = new SessionPool<Lease>(
      {
        create: () => ({ session: this.#openSession(), generation: this.#generation }),
        destroy: lease => closeQuietly(lease.session),
      },
      config.sessions,
      MAX_QUEUED_CALLS,
    );
  }

  /** The serial of the token as last connected. */
  get tokenSerial(): string {
    return this.#tokenSerial;
  }

  open(): void {
    this.#module = loadModule(this.#config.module);
    this.#connect();
  }

  /**
   * Runs one crypto operation on a pooled session. A lost session, login or device is
   * recovered once and the operation retried; a second failure is UNAVAILABLE.
   */
  async withSession<T>(
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
    throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.#config.name}: the HSM did not recover`);
  }

  /** For anchor-session work (listing, key generation, probes): recover once, then fail. */
  async withAnchor<T>(operation: (anchor: graphene.Session) => Promise<T>): Promise<T> {
    await this.#recovering;
    try {
      return await operation(this.#requireAnchor());
    } catch (error) {
      const failure = classify(error);
      if (!isRecoverable(failure)) throw this.#unavailable(error);
      await this.#recover(failure, ckrName(error));
      try {
        return await operation(this.#requireAnchor());
      } catch (retryError) {
        throw this.#unavailable(retryError);
      }
    }
  }

  async close(): Promise<void> {
    await this.#recovering;
    this.#pool.close();
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
    this.#anchor = openLoggedIn(slot, this.#config, this.#deps.readSecret);
  }

  #openSession(): graphene.Session {
    if (this.#slot === undefined)
      throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.#config.name} is not open`);
    return openSession(this.#slot);
  }

  #recover(failure: 'session' | 'login' | 'device', cause: string | undefined): Promise<void> {
    this.#recovering ??= (async () => {
      this.#deps.logger.warn({ failure, cause }, 'recovering HSM connection');
      this.#generation++;
      this.#deps.onRecover();
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
      throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.#config.name} is not open`);
    return this.#module;
  }

  #unavailable(error: unknown): BrokerError {
    if (error instanceof BrokerError) return error;
    const name = ckrName(error);
    return new BrokerError(
      'BACKEND_UNAVAILABLE',
      `backend ${this.#config.name}: the HSM operation failed${name ? ` (${name})` : ''}`,
      name ?? 'HSM_ERROR',
    );
  }
}

function isRecoverable(failure: Pkcs11Failure | undefined): failure is 'session' | 'login' | 'device' {
  return failure === 'session' || failure === 'login' || failure === 'device';
}
