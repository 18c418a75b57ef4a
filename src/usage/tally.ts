// Counts what a scan reads into a UsageScan: per format, per resource, per key_id, per wrap
// set (the backend versions one broker envelope carries), and what under the broker's KMS
// providers did not decode. Keeps counts only, never a key or value, so memory stays flat
// however large the cluster.
import { BrokerError } from '../errors.ts';
import {
  MAX_SCAN_KEY_IDS,
  MAX_SCAN_RESOURCES,
  MAX_SCAN_WRAP_SETS,
  type ScannedWrap,
  type StoredFormat,
  type UsageScan,
} from '../broker/usage-scan.ts';
import { resourceOf } from './resource-name.ts';
import { decodeStoredValue } from './stored-format.ts';

/** Where resources beyond MAX_SCAN_RESOURCES are counted. */
export const OTHER_RESOURCES = '(other resources)';
/** Where key_ids beyond MAX_SCAN_KEY_IDS are counted (the largest are kept by name). */
export const OTHER_KEY_IDS = '(other key_ids)';

type FormatCounts = Map<StoredFormat, number>;

interface ResourceCount {
  objects: number;
  readonly formats: FormatCounts;
}

interface WrapSetCount {
  readonly wraps: readonly ScannedWrap[];
  objects: number;
  readonly resources: Map<string, number>;
}

interface ProviderCount {
  /** Some value under it is marked as the broker's. */
  broker: boolean;
  /** Its values that did not decode to the broker's envelope. */
  undecoded: number;
  readonly resources: Map<string, number>;
}

export interface ScanFacts {
  readonly scannedAt: string;
  readonly revision: string;
  readonly durationMs: number;
}

export class UsageTally {
  readonly #prefix: string;
  #objects = 0;
  readonly #formats: FormatCounts = new Map();
  readonly #resources = new Map<string, ResourceCount>();
  readonly #keyIds = new Map<string, number>();
  readonly #wrapSets = new Map<string, WrapSetCount>();
  /** By "<format>:<provider>": a provider is the broker's if any value under it is. */
  readonly #providers = new Map<string, ProviderCount>();

  constructor(prefix: string) {
    this.#prefix = prefix;
  }

  get objects(): number {
    return this.#objects;
  }

  /** Counts one stored value; `key` is known to start with the prefix. */
  add(key: string, value: Buffer): void {
    const stored = decodeStoredValue(value);
    const resource = this.#resourceFor(resourceOf(key, this.#prefix));
    this.#objects++;
    increment(this.#formats, stored.format);
    const counts = this.#resources.get(resource) ?? { objects: 0, formats: new Map() };
    counts.objects++;
    increment(counts.formats, stored.format);
    this.#resources.set(resource, counts);
    if (stored.format !== 'kms-v2' && stored.format !== 'kms-v1') return;
    if (stored.format === 'kms-v2' && stored.keyId !== undefined) increment(this.#keyIds, stored.keyId);
    const providerKey = `${stored.format}:${stored.provider}`;
    const provider = this.#providers.get(providerKey) ?? {
      broker: false,
      undecoded: 0,
      resources: new Map(),
    };
    this.#providers.set(providerKey, provider);
    const { ownership } = stored;
    if (ownership.owner !== 'other') provider.broker = true;
    if (ownership.owner !== 'broker') {
      provider.undecoded++;
      increment(provider.resources, resource);
      return;
    }
    const setKey = ownership.wraps.map(wrap => `${wrap.backend}\0${wrap.version}`).join('\0\0');
    let set = this.#wrapSets.get(setKey);
    if (set === undefined) {
      if (this.#wrapSets.size >= MAX_SCAN_WRAP_SETS)
        throw new BrokerError(
          'INTERNAL',
          `stored data carries more than ${MAX_SCAN_WRAP_SETS} distinct sets of backend key versions, more than a scan can record`,
        );
      set = { wraps: ownership.wraps, objects: 0, resources: new Map() };
      this.#wrapSets.set(setKey, set);
    }
    set.objects++;
    increment(set.resources, resource);
  }

  /** The resource's own name while there is room for it, then the overflow bucket. */
  #resourceFor(name: string): string {
    if (this.#resources.has(name) || this.#resources.size < MAX_SCAN_RESOURCES - 1) return name;
    return OTHER_RESOURCES;
  }

  result(facts: ScanFacts): UsageScan {
    const undecodable = { objects: 0, resources: new Map<string, number>() };
    for (const provider of this.#providers.values()) {
      if (!provider.broker) continue;
      undecodable.objects += provider.undecoded;
      for (const [resource, count] of provider.resources)
        undecodable.resources.set(resource, (undecodable.resources.get(resource) ?? 0) + count);
    }
    return {
      scannedAt: facts.scannedAt,
      revision: facts.revision,
      prefix: this.#prefix,
      durationMs: facts.durationMs,
      objects: this.#objects,
      formats: formatsObject(this.#formats),
      resources: [...this.#resources.entries()]
        .sort(([a], [b]) => compare(a, b))
        .map(([resource, counts]) => ({
          resource,
          objects: counts.objects,
          formats: formatsObject(counts.formats),
        })),
      keyIds: boundedKeyIds(this.#keyIds),
      wrapSets: [...this.#wrapSets.entries()]
        .sort(([a], [b]) => compare(a, b))
        .map(([, set]) => ({
          wraps: set.wraps.map(wrap => ({ ...wrap })),
          objects: set.objects,
          resources: sortedRecord(set.resources),
        })),
      undecodable: { objects: undecodable.objects, resources: sortedRecord(undecodable.resources) },
    };
  }
}

/** The most used key_ids by name, the rest summed up under OTHER_KEY_IDS. */
function boundedKeyIds(counts: ReadonlyMap<string, number>): UsageScan['keyIds'] {
  const sorted = [...counts.entries()].sort(([a, x], [b, y]) => y - x || compare(a, b));
  if (sorted.length <= MAX_SCAN_KEY_IDS) return sorted.map(([keyId, objects]) => ({ keyId, objects }));
  const kept = sorted.slice(0, MAX_SCAN_KEY_IDS - 1);
  const rest = sorted.slice(MAX_SCAN_KEY_IDS - 1).reduce((sum, [, objects]) => sum + objects, 0);
  return [...kept.map(([keyId, objects]) => ({ keyId, objects })), { keyId: OTHER_KEY_IDS, objects: rest }];
}

function formatsObject(counts: FormatCounts): UsageScan['formats'] {
  return Object.fromEntries([...counts.entries()].sort(([a], [b]) => compare(a, b)));
}

function sortedRecord(counts: ReadonlyMap<string, number>): Record<string, number> {
  return Object.fromEntries([...counts.entries()].sort(([a], [b]) => compare(a, b)));
}

function increment<K>(counts: Map<K, number>, key: K): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
