// The backend's connection to its token: the loaded module, the logged-in anchor session
// and the pool of crypto sessions, and recovery when a session, the login or the device is
// lost. Every HSM call runs through withSession (crypto), withAnchor (everything else) or
// probe, so probes drive recovery in the background while no call arrives.
import type graphene from 'graphene-pk11';
import type { Pkcs11BackendConfig } from './pkcs11-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { withSignal, type Deadline } from '../../deadline.ts';
import {
  classify,
  classifyName,
  ckrName,
  isRecoverable,
  type Pkcs11Failure,
  type RecoverableFailure,
} from './pkcs11-errors.ts';
import { RecoverySchedule, type RecoveryStep } from './recovery-schedule.ts';
import { SessionPool } from './session-pool.ts';
import { fitPoolToToken } from './session-limit.ts';
import { loadModule, type LoadedModule } from './module-cache.ts';
import { assertTokenUsable, closeQuietly, findSlot, openLoggedIn, openSession } from './token-session.ts';
import type { SessionLane } from './mechanisms/mechanism.ts';

const MAX_QUEUED_CALLS = 4096;
/** About 10 MB of RSS each: 16 fit the static Pod's 512 MiB limit with room to spare. */
const MAX_DEFAULT_THREADS = 16;

/** A thread per session by default: a network HSM's calls wait on the wire, not on a core. */
function defaultThreads(sessions: number): number {
  return Math.min(sessions, MAX_DEFAULT_THREADS);
}

type Purpose = 'wrap' | 'unwrap' | 'token';

interface Lease {
  readonly session: graphene.Session;
  readonly generation: number;
}

export interface HsmConnectionDeps {
  readonly readSecret: SecretReader;
  readonly logger: Logger;
  /** Called as each recovery starts, to drop what the lost connection made invalid. */
  readonly onRecover: () => void;
  /** Refuses, at the first connect, a token that cannot serve the config (a missing mechanism). */
  readonly checkToken: (slot: graphene.Slot) => void;
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
  readonly #schedule = new RecoverySchedule();
  /** The token refused the PIN during a recovery: never tried again, tokens lock or wipe. */
  #refused: BrokerError | undefined;
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

  /** Loads the library and connects; a failed open leaves nothing loaded, so it can be tried again. */
  open(): void {
    this.#module = loadModule(
      this.#config.module,
      this.#config.threads ?? defaultThreads(this.#config.sessions),
    );
    try {
      this.#connect();
      this.#deps.checkToken(this.#slot as graphene.Slot);
    } catch (error) {
      this.#closeAnchor();
      this.#module.release();
      this.#module = undefined;
      throw error;
    }
  }

  /** Runs one crypto operation on a pooled session, its cipher calls on the crypto threads. */
  withSession<T>(
    deadline: Deadline,
    purpose: 'wrap' | 'unwrap',
    operation: (lane: SessionLane) => Promise<T>,
  ): Promise<T> {
    return this.#run(deadline, purpose, async () => {
      // Opening a pooled session can itself fail when the token or library was lost.
      const lease = await this.#pool.acquire(deadline.signal);
      const { session } = lease;
      const threads = this.#requireModule().threads;
      let failed = true;
      try {
        const result = await operation({
          session,
          cipher: op => threads.run({ ...op, session: session.handle }, deadline.signal),
        });
        failed = false;
        return result;
      } catch (error) {
        // A session that saw a PKCS#11 error is not reused: it may be the broken part.
        failed = !(error instanceof BrokerError);
        throw error;
      } finally {
        this.#pool.release(lease, failed || lease.generation !== this.#generation);
      }
    });
  }

  /** For anchor-session work: listing and creating key objects. */
  withAnchor<T>(deadline: Deadline, operation: (anchor: graphene.Session) => Promise<T>): Promise<T> {
    return this.#run(deadline, 'token', () => operation(this.#requireAnchor()));
  }

  /**
   * The health probe: the token answers and the login holds; recovers when they do not. It
   * also touches every idle pooled session (C_GetSessionInfo), so a token that reclaims idle
   * sessions keeps them while the probe interval is shorter than its idle limit; one already
   * reclaimed is closed here instead of failing the next call.
   */
  probe(deadline: Deadline): Promise<void> {
    return this.#run(deadline, 'token', () => {
      this.assertUsable();
      this.#pool.touchIdle(lease => lease.session.lib.C_GetSessionInfo(lease.session.handle));
      return Promise.resolve();
    });
  }

  /** How many crypto sessions the pool may hold: the config's, or less on a capped token. */
  get poolSize(): number {
    return this.#pool.size;
  }

  /**
   * Throws the token's own PKCS#11 error when it cannot serve now. A key object that is
   * not found is only an answer when the token passes this check.
   */
  assertUsable(): void {
    if (this.#slot === undefined) throw new Error('CKR_TOKEN_NOT_PRESENT: not connected');
    assertTokenUsable(this.#slot, this.#requireAnchor());
  }

  async close(): Promise<void> {
    await this.#recovering?.catch(() => undefined);
    this.#pool.close();
    this.#closeAnchor();
    this.#module?.release();
    this.#module = undefined;
  }

  /**
   * Runs `work` once the connection is usable. A lost session, login or device is recovered
   * and the work tried once more; a second failure, or a recovery that fails, is UNAVAILABLE.
   */
  async #run<T>(deadline: Deadline, purpose: Purpose, work: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      await this.#ready(deadline);
      try {
        return await work();
      } catch (error) {
        const failure = this.#failureOf(error, purpose);
        if (failure === 'data' && purpose === 'unwrap') {
          throw new BrokerError(
            'INVALID_CIPHERTEXT',
            'the wrapped key failed authentication: tampered with, or wrapped under another key',
            ckrName(error),
          );
        }
        if (attempt > 0 || !isRecoverable(failure)) throw this.#unavailable(error);
        await this.#recover(failure, ckrName(error), deadline);
      }
    }
  }

  #failureOf(error: unknown, purpose: Purpose): Pkcs11Failure | undefined {
    if (error instanceof BrokerError) return undefined;
    const failure = classify(error);
    // SoftHSM answers a GCM tag mismatch and a lost token alike (CKR_GENERAL_ERROR): the
    // ciphertext is to blame only when the token proves usable right after.
    if (purpose === 'unwrap' && ckrName(error) === 'CKR_GENERAL_ERROR') {
      try {
        this.assertUsable();
        return 'data';
      } catch {
        return failure;
      }
    }
    return failure;
  }

  /** Waits for a recovery in progress; while the connection is broken, starts one when due. */
  async #ready(deadline: Deadline): Promise<void> {
    if (this.#refused !== undefined) throw this.#refused;
    if (this.#recovering !== undefined) await withSignal(this.#recovering, deadline.signal);
    else if (this.#schedule.broken) await this.#recover('device', this.#schedule.cause, deadline);
  }

  /** Joins the recovery in progress or starts one, unless the backoff says not yet. */
  #recover(failure: RecoverableFailure, cause: string | undefined, deadline: Deadline): Promise<void> {
    if (this.#recovering === undefined) {
      const waitMs = this.#schedule.waitMs();
      if (waitMs > 0) {
        const last = this.#schedule.cause ?? cause;
        return Promise.reject(
          new BrokerError(
            'BACKEND_UNAVAILABLE',
            `backend ${this.#config.name}: the HSM is unavailable${last ? ` (${last})` : ''}; next recovery attempt in ${Math.ceil(waitMs)} ms`,
            last ?? 'HSM_RECOVERING',
          ),
        );
      }
      this.#recovering = this.#attempt(failure, this.#schedule.step(failure), cause).finally(() => {
        this.#recovering = undefined;
      });
    }
    return withSignal(this.#recovering, deadline.signal);
  }

  async #attempt(failure: RecoverableFailure, step: RecoveryStep, cause: string | undefined): Promise<void> {
    const attempt = this.#schedule.failures + 1;
    this.#deps.logger.warn({ failure, cause, step, attempt }, 'recovering HSM connection');
    this.#generation++;
    this.#deps.onRecover();
    this.#pool.discardIdle();
    try {
      if (step === 'reset') {
        this.#closeAnchor();
        // Never finalized under another backend or with a call in flight (crashes libraries).
        const reset = await this.#requireModule().reset(() => this.#pool.leased === 0);
        if (!reset) this.#deps.logger.warn('HSM library not reset: shared with another backend, or busy');
        this.#connect();
      } else if (!this.#usable()) {
        this.#closeAnchor();
        this.#connect();
      }
      this.assertUsable();
    } catch (error) {
      const failed = this.#unavailable(error);
      if (failed.code === 'HSM_LOGIN_FAILED' && classifyName(failed.causeName) === 'pin') {
        this.#refused = failed;
        throw failed;
      }
      this.#schedule.failed(failed.causeName);
      this.#deps.logger.warn(
        { cause: failed.causeName, attempt, retryInMs: this.#schedule.waitMs() },
        'HSM connection not recovered',
      );
      // Token not found or login failed here means the token is away, not misconfigured.
      throw new BrokerError('BACKEND_UNAVAILABLE', failed.message, failed.causeName ?? failed.code);
    }
    this.#schedule.succeeded();
    this.#deps.logger.info({ step, attempts: attempt }, 'HSM connection recovered');
  }

  /** Finds the token, opens the anchor session and logs in. */
  #connect(): void {
    const slot = findSlot(this.#requireModule().module, this.#config);
    this.#slot = slot;
    const token = slot.getToken();
    this.#tokenSerial = token.serialNumber.trim();
    fitPoolToToken(this.#pool, this.#config.sessions, token, this.#deps.logger);
    this.#anchor = openLoggedIn(slot, this.#config, this.#deps.readSecret);
  }

  #usable(): boolean {
    try {
      this.assertUsable();
      return true;
    } catch {
      return false;
    }
  }

  #closeAnchor(): void {
    if (this.#anchor !== undefined) closeQuietly(this.#anchor);
    this.#anchor = undefined;
  }

  #openSession(): graphene.Session {
    if (this.#slot === undefined)
      throw new BrokerError('BACKEND_UNAVAILABLE', `backend ${this.#config.name} is not open`);
    return openSession(this.#slot);
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

  /** BrokerErrors pass through; anything else is UNAVAILABLE, named by its CKR_ name only. */
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
