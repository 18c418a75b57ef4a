// The seam between the key set and where its persistent form lives: a file today, etcd for
// control planes with several brokers. A store knows its own writes: `watch` reports only
// changes someone else made, so a broker never reloads (and re-lists every backend for)
// what it just committed itself.
import type { BrokerState } from './state-schema.ts';

export interface StateStore {
  /** Where the state lives, for messages (a path, an etcd prefix). */
  readonly location: string;
  /** The stored state, or undefined when there is none yet. Throws STATE_CORRUPT. */
  load(): Promise<BrokerState | undefined>;
  save(state: BrokerState): Promise<void>;
  /** Calls `onChange` when another writer changes the stored state; never for this store's own saves. */
  watch(onChange: () => void, intervalMs: number): () => void;
}
