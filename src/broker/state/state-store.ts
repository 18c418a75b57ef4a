// The seam between the key set and where its persistent form lives: a file for one broker,
// etcd for control planes with several. A store knows its own writes: `watch` reports only
// changes someone else made, so a broker never reloads (and re-lists every backend for)
// what it just committed itself.
import type { BrokerState } from './state-schema.ts';

export interface StateStore {
  /** Where the state lives, for messages (a path, an etcd prefix). */
  readonly location: string;
  /** The stored state, or undefined when there is none yet. Throws STATE_CORRUPT. */
  load(): Promise<BrokerState | undefined>;
  /**
   * Persists `state`; `keyId` is the key_id it advertises (the broker always says; a shared
   * store needs it). A shared store promotes a new key_id only once every live broker
   * confirmed it can unwrap with its write keys, and resolves only after the commit.
   */
  save(state: BrokerState, keyId?: string): Promise<void>;
  /** Calls `onChange` when another writer changes the stored state; never for this store's own saves. */
  watch(onChange: () => void, intervalMs: number): () => void;
  /** Present when several brokers share the store. */
  readonly shared?: SharedState;
}

/** What a shared store asks of the broker it serves. */
export interface LocalBroker {
  /** The key_id this broker advertises now, and the key versions it can unwrap with. */
  advertised(): { keyId: string; unwrappable: readonly UnwrapKey[] };
  /**
   * Proves this broker can unwrap with the write keys of a proposed state (a round trip per
   * key it can reach); throws a BrokerError saying why not.
   */
  confirm(state: BrokerState): Promise<void>;
}

export interface UnwrapKey {
  readonly backend: string;
  readonly version: string;
}

export interface SharedState {
  /** Starts answering the peers' proposals and registers this broker (in the background). */
  join(local: LocalBroker): void;
  /** etcd answered the load and holds no state yet: the broker shares its own at once. */
  needsSeed(): boolean;
  /** The broker's advertised key_id changed: its registration is refreshed now. */
  advertisedChanged(): void;
  view(): ClusterView;
  close(): Promise<void>;
}

export interface ClusterMember {
  readonly node: string;
  readonly version: string;
  readonly keyId: string;
  readonly unwrappable: readonly UnwrapKey[];
  readonly lastSeenAt: string;
  readonly self: boolean;
}

export interface ClusterView {
  readonly name: string;
  readonly prefix: string;
  readonly node: string;
  readonly etcd: { readonly reachable: boolean; readonly lastContactAt?: string };
  /** The committed state's key_id: what every broker should advertise. */
  readonly keyId?: string;
  readonly members: readonly ClusterMember[];
  /** Every live broker advertises the committed key_id. */
  readonly converged: boolean;
  /** Since when they have disagreed, while they do. */
  readonly disagreeingSince?: string;
  readonly proposal?: {
    readonly node: string;
    readonly keyId: string;
    readonly proposedAt: string;
    readonly confirmedBy: readonly string[];
  };
}
