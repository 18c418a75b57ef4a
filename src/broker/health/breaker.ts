// A circuit breaker per backend, fed by probes and real calls. Closed: calls flow. Open:
// the backend is tried last (reads) and does not take writes. After a cool-down it is
// half-open: the next success closes it, a failure opens it again. A failed probe opens it
// at once (probes are cheap and deliberate); real calls need several failures in a row,
// so one unlucky timeout does not take a backend out.
import type { BreakerState } from '../../metrics/metrics.ts';

export interface BreakerOptions {
  readonly failureThreshold: number;
  readonly openCooldownMs: number;
  readonly now?: () => number;
}

export class Breaker {
  readonly #options: BreakerOptions;
  readonly #now: () => number;
  #state: BreakerState = 'closed';
  #failures = 0;
  #openedAt = 0;
  /**
   * Since when the breaker has been closed without interruption (for write hysteresis). A
   * backend that was never down has been closed "forever": it takes writes at once.
   */
  #closedSince = -Infinity;

  constructor(options: BreakerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get state(): BreakerState {
    if (this.#state === 'open' && this.#now() - this.#openedAt >= this.#options.openCooldownMs)
      return 'half-open';
    return this.#state;
  }

  /** Milliseconds the breaker has been closed without interruption (Infinity if never opened); 0 unless closed. */
  closedForMs(): number {
    return this.state === 'closed' ? this.#now() - this.#closedSince : 0;
  }

  success(): void {
    if (this.#state !== 'closed') this.#closedSince = this.#now();
    this.#state = 'closed';
    this.#failures = 0;
  }

  failure(source: 'probe' | 'call'): void {
    this.#failures++;
    const trial = this.state === 'half-open';
    if (source === 'probe' || trial || this.#failures >= this.#options.failureThreshold) {
      this.#state = 'open';
      this.#openedAt = this.#now();
    }
  }
}
