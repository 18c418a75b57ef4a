// Which key versions Decrypts needed, and when: counted in memory on the hot path (one map
// update, no I/O) and folded into the stored state by a periodic flush.
import type { StoredVersion } from '../state/state-schema.ts';
import type { KeyRegistry } from './key-registry.ts';

interface Counts {
  sinceStart: number;
  pending: number;
  lastAt: string;
}

export interface UsageView {
  readonly lastDecryptAt: string | undefined;
  readonly decryptCount: number;
  readonly decryptsSinceStart: number;
}

export class UsageLog {
  readonly #now: () => Date;
  readonly #counts = new Map<string, Counts>();

  constructor(now: () => Date) {
    this.#now = now;
  }

  /** Counts a Decrypt that needed a version. */
  record(backend: string, version: string): void {
    const key = usageKey(backend, version);
    const counts = this.#counts.get(key) ?? { sinceStart: 0, pending: 0, lastAt: '' };
    counts.sinceStart++;
    counts.pending++;
    counts.lastAt = this.#now().toISOString();
    this.#counts.set(key, counts);
  }

  /** A stored version's usage, with what was counted since the last flush. */
  view(backend: string, version: StoredVersion): UsageView {
    const counts = this.#counts.get(usageKey(backend, version.version));
    return {
      lastDecryptAt: latest(version.lastDecryptAt, counts?.lastAt),
      decryptCount: (version.decryptCount ?? 0) + (counts?.pending ?? 0),
      decryptsSinceStart: counts?.sinceStart ?? 0,
    };
  }

  hasPending(): boolean {
    for (const counts of this.#counts.values()) if (counts.pending > 0) return true;
    return false;
  }

  /**
   * Adds what is pending to the registry and returns how to settle it: `done` once the
   * commit that carries it was persisted (what was counted meanwhile stays pending).
   */
  fold(registry: KeyRegistry): { done: () => void } {
    const taken = [...this.#counts.entries()].flatMap(([key, counts]) =>
      counts.pending > 0 ? [{ key, counts, count: counts.pending }] : [],
    );
    for (const { key, counts, count } of taken) {
      const [backend = '', version = ''] = key.split('\0');
      registry.addUsage(backend, version, count, counts.lastAt);
    }
    return {
      done: () => {
        for (const { counts, count } of taken) counts.pending -= count;
      },
    };
  }
}

function usageKey(backend: string, version: string): string {
  return `${backend}\0${version}`;
}

function latest(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined || a === '') return b === '' ? undefined : b;
  if (b === undefined || b === '') return a;
  return a > b ? a : b;
}
