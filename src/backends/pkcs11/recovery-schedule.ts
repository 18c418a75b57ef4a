// When the connection to the token may try to recover again, and how hard. A lost session
// or login is first mended by new sessions and, when the anchor lost its login, a re-login.
// A device failure, or a first attempt that did not bring the token back, escalates to a
// library reset (C_Finalize, C_Initialize): SoftHSM whose storage went away keeps failing,
// even after the storage returns, until the library is initialized again. Failed attempts
// are spaced by a doubling backoff, so an outage costs a few attempts, not one per call.
import type { RecoverableFailure } from './pkcs11-errors.ts';

export const RECOVERY_BACKOFF_MIN_MS = 250;
export const RECOVERY_BACKOFF_MAX_MS = 5000;

export type RecoveryStep = 'reconnect' | 'reset';

export class RecoverySchedule {
  readonly #now: () => number;
  #failures = 0;
  #nextAt = 0;
  #cause: string | undefined;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Whether the last attempt failed: the connection is unusable until one succeeds. */
  get broken(): boolean {
    return this.#failures > 0;
  }

  /** Attempts failed in a row. */
  get failures(): number {
    return this.#failures;
  }

  /** Why the last attempt failed (a CKR_ name or an error code). */
  get cause(): string | undefined {
    return this.#cause;
  }

  /** Milliseconds before the next attempt may start; 0 when it may start now. */
  waitMs(): number {
    return this.#failures === 0 ? 0 : Math.max(0, this.#nextAt - this.#now());
  }

  step(failure: RecoverableFailure): RecoveryStep {
    return failure === 'device' || this.#failures > 0 ? 'reset' : 'reconnect';
  }

  failed(cause: string | undefined): void {
    this.#failures++;
    this.#cause = cause;
    const backoff = RECOVERY_BACKOFF_MIN_MS * 2 ** Math.min(this.#failures - 1, 16);
    this.#nextAt = this.#now() + Math.min(backoff, RECOVERY_BACKOFF_MAX_MS);
  }

  succeeded(): void {
    this.#failures = 0;
    this.#cause = undefined;
  }
}
