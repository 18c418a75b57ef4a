// Seeds that went out with `wrap: all` but without some backends' wraps: readable only
// through the backends that did wrap them. Kept per key_id, so that healing can tell when
// the current seed is thin and the admin API can say which key_ids are; persisted with the
// key set, so that a restart does not forget a seed that still needs healing.
import type { ThinSeed } from './state/state-schema.ts';
import { MAX_THIN_SEEDS } from './state/state-schema.ts';

export class ThinSeeds {
  readonly #seeds = new Map<string, ThinSeed>();
  readonly #persist: (seeds: ThinSeed[]) => void;
  readonly #now: () => Date;

  /** `persist` is handed every change; Encrypt never waits for it. */
  constructor(stored: readonly ThinSeed[], persist: (seeds: ThinSeed[]) => void, now: () => Date) {
    for (const seed of stored) this.#seeds.set(seed.keyId, seed);
    this.#persist = persist;
    this.#now = now;
  }

  /** Records that a seed of `keyId` lacks these backends' wraps (merged: seeds may miss different ones). */
  add(keyId: string, missing: readonly string[]): void {
    const known = this.#seeds.get(keyId);
    const merged = [...new Set([...(known?.missing ?? []), ...missing])];
    if (known !== undefined && merged.length === known.missing.length) return;
    this.#seeds.delete(keyId);
    this.#seeds.set(keyId, { keyId, missing: merged, since: known?.since ?? this.#now().toISOString() });
    for (const oldest of [...this.#seeds.keys()].slice(0, Math.max(0, this.#seeds.size - MAX_THIN_SEEDS)))
      this.#seeds.delete(oldest);
    this.#persist([...this.#seeds.values()]);
  }

  /** What some seed of `keyId` lacks, and since when, if it is thin. */
  get(keyId: string): ThinSeed | undefined {
    return this.#seeds.get(keyId);
  }

  keyIds(): string[] {
    return [...this.#seeds.keys()];
  }
}
