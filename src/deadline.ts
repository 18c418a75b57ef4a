// Every backend call runs under a deadline well inside the apiserver's timeout, so the
// broker answers DEADLINE_EXCEEDED or UNAVAILABLE before the apiserver gives up on it. The
// deadline travels as a value (the signal and the moment it fires) through the broker and
// into the backends, so that a backend can size each retry to what is left of it.
import { BrokerError } from './errors.ts';

export interface Deadline {
  /** Fires at `at`, or earlier when a parent deadline fires. */
  readonly signal: AbortSignal;
  /** When the signal fires, in epoch ms. */
  readonly at: number;
}

export interface OwnedDeadline extends Deadline {
  /** Stops the timer once the call is done (an undisposed one only fires late, harmlessly). */
  dispose(): void;
}

/**
 * A deadline at the earlier of `budgetMs` from now and the caller's own deadline (epoch ms),
 * keeping a small margin so our answer reaches the caller in time.
 */
export function startDeadline(budgetMs: number, callerDeadline?: number): OwnedDeadline {
  const marginMs = 50;
  const callerBudget = callerDeadline === undefined ? Infinity : callerDeadline - Date.now() - marginMs;
  return timed(Math.min(budgetMs, callerBudget));
}

/**
 * A part of a deadline: fires after `shareMs` or with the parent, whichever is first, so that
 * one try among several cannot spend the whole budget.
 */
export function partOfDeadline(parent: Deadline, shareMs: number): OwnedDeadline {
  return timed(shareMs, parent);
}

/** Milliseconds left before the deadline. */
export function remainingMs(deadline: Deadline): number {
  return Math.max(0, deadline.at - Date.now());
}

/**
 * A signal that fires after `ms` (whole, at least 1: timers refuse fractions) or with the
 * parent; cleared on dispose. KMS calls come by the thousand, and AbortSignal.timeout's timer
 * would still fire (and build an abort error) seconds after every call that finished.
 */
function timed(ms: number, parent?: Deadline): OwnedDeadline {
  const wholeMs = Math.max(1, Math.floor(ms));
  const controller = new AbortController();
  const abort = () => controller.abort();
  parent?.signal.addEventListener('abort', abort, { once: true });
  if (parent?.signal.aborted === true) controller.abort();
  const timer = setTimeout(abort, wholeMs);
  // Like AbortSignal.timeout: a pending deadline alone never keeps the process alive.
  timer.unref();
  return {
    signal: controller.signal,
    at: Math.min(Date.now() + wholeMs, parent?.at ?? Infinity),
    dispose: () => {
      clearTimeout(timer);
      parent?.signal.removeEventListener('abort', abort);
    },
  };
}

/** Settles with the promise, or rejects with DEADLINE_EXCEEDED when the signal fires first. */
export function withSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(deadlineExceeded());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(deadlineExceeded());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      value => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

export function deadlineExceeded(): BrokerError {
  return new BrokerError('DEADLINE_EXCEEDED', 'the call did not complete within its deadline');
}

/** Runs `call` under a fresh deadline of `budgetMs`, and clears its timer when the call settles. */
export async function within<T>(budgetMs: number, call: (deadline: Deadline) => Promise<T>): Promise<T> {
  const deadline = startDeadline(budgetMs);
  try {
    return await call(deadline);
  } finally {
    deadline.dispose();
  }
}
