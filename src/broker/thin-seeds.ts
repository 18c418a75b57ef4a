// Seeds that went out with `wrap: all` but without some backends' wraps: readable only
// through the backends that did wrap them. Kept per key_id, so that healing can tell when
// the current seed is thin and the admin API can say which key_ids are.
export class ThinSeeds {
  readonly #missing = new Map<string, readonly string[]>();

  /** Records that a seed of `keyId` lacks these backends' wraps (merged: seeds may miss different ones). */
  add(keyId: string, missing: readonly string[]): void {
    this.#missing.set(keyId, [...new Set([...(this.#missing.get(keyId) ?? []), ...missing])]);
  }

  /** The backends some seed of `keyId` lacks, if any. */
  missing(keyId: string): readonly string[] | undefined {
    return this.#missing.get(keyId);
  }

  keyIds(): string[] {
    return [...this.#missing.keys()];
  }
}
