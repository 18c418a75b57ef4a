// Every backend call runs under a deadline well inside the apiserver's timeout, so the
// broker answers DEADLINE_EXCEEDED or UNAVAILABLE before the apiserver gives up on it.
import { BrokerError } from '../errors.ts';

/**
 * A signal that fires at the earlier of the broker's own budget and the caller's deadline
 * (epoch ms), keeping a small margin so our answer reaches the caller in time.
 */
export function callSignal(budgetMs: number, callerDeadline?: number): AbortSignal {
  const ms = budget(budgetMs, callerDeadline);
  const signal = AbortSignal.timeout(ms);
  deadlines.set(signal, Date.now() + ms);
  return signal;
}

export interface CallDeadline {
  readonly signal: AbortSignal;
  /** Stops the timer once the call is done. */
  dispose(): void;
}

/**
 * callSignal for KMS calls, which come by the thousand: AbortSignal.timeout's timer still
 * fires (and builds an abort error) seconds after a call that finished, for every call; this
 * one is cleared when the call is done.
 */
export function callDeadline(budgetMs: number, callerDeadline?: number): CallDeadline {
  return timedDeadline(budget(budgetMs, callerDeadline));
}

/**
 * A part of a call's deadline: fires after `share` ms or with the call's own signal, whichever
 * is first, so that one try among several cannot spend the whole budget.
 */
export function partOfDeadline(parent: AbortSignal, share: number): CallDeadline {
  return timedDeadline(Math.max(1, Math.floor(share)), parent);
}

/** A signal that fires after `ms`, or with `parent`; its timer and listener go on dispose. */
function timedDeadline(ms: number, parent?: AbortSignal): CallDeadline {
  const controller = new AbortController();
  const abort = () => controller.abort();
  parent?.addEventListener('abort', abort, { once: true });
  const timer = setTimeout(abort, ms);
  // Like AbortSignal.timeout: a pending deadline alone never keeps the process alive.
  timer.unref();
  const parentAt = parent === undefined ? undefined : deadlines.get(parent);
  deadlines.set(controller.signal, Math.min(Date.now() + ms, parentAt ?? Infinity));
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', abort);
    },
  };
}

function budget(budgetMs: number, callerDeadline: number | undefined): number {
  const marginMs = 50;
  const callerBudget = callerDeadline === undefined ? Infinity : callerDeadline - Date.now() - marginMs;
  return Math.max(1, Math.floor(Math.min(budgetMs, callerBudget)));
}

/** When each call signal fires; AbortSignal itself does not say. */
const deadlines = new WeakMap<AbortSignal, number>();

/**
 * Milliseconds left before a call signal fires (Infinity for a signal of unknown origin),
 * so that a backend can size each retry's request timeout to what is left.
 */
export function remainingMs(signal: AbortSignal): number {
  const at = deadlines.get(signal);
  return at === undefined ? Infinity : Math.max(0, at - Date.now());
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
