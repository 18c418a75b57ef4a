// A pool of HSM sessions (and of the crypto threads that run their calls, threads/). PKCS#11
// allows one active operation per session, so concurrency to the token is exactly the pool
// size; callers beyond it wait in a bounded FIFO queue and give up when their deadline fires. The size is the config's until the token states a lower cap
// (resize), and idle sessions are touched by the health probe so that tokens which reclaim
// idle sessions (a YubiHSM 2 after 30 s) keep them.
import { BrokerError } from '../../errors.ts';
import { deadlineExceeded } from '../../deadline.ts';

export interface PoolHooks<T> {
  create(): T;
  destroy(item: T): void;
}

interface Waiter<T> {
  resolve(item: T): void;
  reject(error: Error): void;
}

export class SessionPool<T> {
  readonly #hooks: PoolHooks<T>;
  #size: number;
  readonly #maxWaiters: number;
  readonly #idle: T[] = [];
  readonly #waiters: Waiter<T>[] = [];
  #leased = 0;
  #closed = false;

  constructor(hooks: PoolHooks<T>, size: number, maxWaiters: number) {
    this.#hooks = hooks;
    this.#size = size;
    this.#maxWaiters = maxWaiters;
  }

  get leased(): number {
    return this.#leased;
  }

  get size(): number {
    return this.#size;
  }

  /** Items made and not destroyed: leased and idle. */
  get held(): number {
    return this.#leased + this.#idle.length;
  }

  /** Sets the size; sessions above a smaller size are closed as they come back idle. */
  resize(size: number): void {
    this.#size = size;
    const excess = this.#idle.length + this.#leased - size;
    if (excess > 0) for (const item of this.#idle.splice(0, excess)) this.#hooks.destroy(item);
    while (this.#waiters.length > 0 && this.#leased < this.#size) this.#serveWaiter();
  }

  /** Calls `touch` on every idle session; one it throws on is gone and is closed. */
  touchIdle(touch: (item: T) => void): void {
    for (const item of [...this.#idle]) {
      try {
        touch(item);
      } catch {
        this.#idle.splice(this.#idle.indexOf(item), 1);
        this.#hooks.destroy(item);
      }
    }
  }

  /** Async so that a failing session open (token gone, library reset) becomes a rejection. */
  async acquire(signal: AbortSignal): Promise<T> {
    if (this.#closed) throw new BrokerError('BACKEND_UNAVAILABLE', 'the HSM session pool is closed');
    if (signal.aborted) throw deadlineExceeded();
    const idle = this.#idle.pop();
    if (idle !== undefined) return this.#lease(idle);
    if (this.#leased < this.#size) return this.#lease(this.#hooks.create());
    if (this.#waiters.length >= this.#maxWaiters) {
      throw new BrokerError('BACKEND_UNAVAILABLE', 'too many calls are waiting for the HSM', 'QUEUE_FULL');
    }
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter<T> = {
        resolve: item => {
          signal.removeEventListener('abort', onAbort);
          resolve(item);
        },
        reject,
      };
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(deadlineExceeded());
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /**
   * Returns a session; a broken one, or one above a size lowered meanwhile, is destroyed and
   * its slot freed for a new one.
   */
  release(item: T, broken = false): void {
    this.#leased--;
    if (broken || this.#closed || this.#leased + this.#idle.length >= this.#size) {
      this.#hooks.destroy(item);
      if (this.#leased + this.#idle.length < this.#size) this.#serveWaiter();
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter === undefined) this.#idle.push(item);
    else waiter.resolve(this.#lease(item));
  }

  /** Destroys idle sessions (after a re-login or a device reset); leased ones die on release. */
  discardIdle(): void {
    for (const item of this.#idle.splice(0)) this.#hooks.destroy(item);
  }

  close(): void {
    this.#closed = true;
    this.discardIdle();
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(new BrokerError('BACKEND_UNAVAILABLE', 'the HSM session pool is closed'));
    }
  }

  #lease(item: T): T {
    this.#leased++;
    return item;
  }

  #serveWaiter(): void {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) return;
    try {
      waiter.resolve(this.#lease(this.#hooks.create()));
    } catch (error) {
      waiter.reject(error as Error);
    }
  }
}
