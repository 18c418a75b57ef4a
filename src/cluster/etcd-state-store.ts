// The state shared by the brokers of one control plane, in etcd under one prefix, behind the
// same StateStore seam as the file. etcd is never on a KMS call's path nor a reason not to
// start: every committed state seen is also written to the local copy (state.path), which the
// broker loads when etcd does not answer. Writes are transactions compared on the revision
// this broker last saw, so two nodes never overwrite each other; a change of key_id goes
// through a two-phase promotion (promotion.ts). With etcd unreachable, saves are refused.
import type { BrokerState } from '../broker/state/state-schema.ts';
import type { LocalBroker, SharedState, StateStore } from '../broker/state/state-store.ts';
import { BrokerError, isBrokerError, toBrokerError } from '../errors.ts';
import type { StoreClient, StoredKv, WatchEvent } from '../etcd/store-client.ts';
import type { Logger } from '../log.ts';
import { ClusterPeers } from './cluster-peers.ts';
import { Membership } from './membership.ts';
import { answer, conflict, promote } from './promotion.ts';
import { clusterKeys, encodeRecord, parseStateRecord, stateRecord, type StateRecord } from './records.ts';

export interface EtcdStateStoreOptions {
  readonly client: StoreClient;
  /** Where etcd is, for messages. */
  readonly endpoints: readonly string[];
  readonly name: string;
  readonly node: string;
  readonly prefix: string;
  readonly leaseTtlMs: number;
  readonly promotionTimeoutMs: number;
  readonly convergenceWarnMs: number;
  readonly version: string;
  /** The local copy: what the broker starts from when etcd does not answer. */
  readonly localCopy: StateStore;
  readonly logger: Logger;
  readonly now?: () => Date;
}

interface Committed {
  readonly revision: string;
  readonly record: StateRecord;
}

export function etcdStateStore(options: EtcdStateStoreOptions): StateStore & { shared: SharedState } {
  const { client, node, logger, localCopy } = options;
  const now = options.now ?? (() => new Date());
  const keys = clusterKeys(options.prefix);
  const peers = new ClusterPeers({ ...options, keys, now });
  let committed: Committed | undefined;
  /** Revisions of this broker's own commits: the watch skips them. */
  const ownRevisions = new Set<string>();
  let onChange: (() => void) | undefined;
  /** etcd answered and held no state: the first save shares this broker's (local copy or new). */
  let unseeded = false;
  let unwatch: (() => void) | undefined;
  const membership = new Membership({
    client,
    keys,
    node,
    version: options.version,
    leaseTtlMs: options.leaseTtlMs,
    logger,
    now,
    onContact: reachable => peers.contact(reachable),
  });

  /** The local copy follows every committed state; failing to write it never fails the change. */
  const keepLocalCopy = (state: BrokerState) =>
    localCopy.save(state).catch((error: unknown) => {
      logger.warn({ code: toBrokerError(error).code }, 'could not update the local copy of the shared state');
    });

  /** Takes a committed record as the newest; says whether it differs from the one held. */
  const adopt = async (kv: StoredKv): Promise<boolean> => {
    // A re-read that started before this broker's own commit may answer after it.
    if (committed !== undefined && BigInt(kv.modRevision) < BigInt(committed.revision)) return false;
    const record = parseStateRecord(kv.value, kv.key);
    const changed = committed === undefined || committed.revision !== kv.modRevision;
    committed = { revision: kv.modRevision, record };
    peers.committedKeyId(record.keyId);
    await keepLocalCopy(record.state);
    return changed;
  };

  const unreachable = (error: unknown): BrokerError => {
    const known = toBrokerError(error);
    if (known.code !== 'ETCD_UNREACHABLE' && known.code !== 'ETCD_READ_FAILED') return known;
    peers.contact(false);
    return new BrokerError(
      'CLUSTER_UNAVAILABLE',
      `etcd (${options.endpoints.join(', ')}) does not answer; the change was refused so that the brokers do not diverge. This broker keeps serving key_id ${committed?.record.keyId ?? 'from its local copy'}; repeat the change once etcd is back`,
      known.code,
    );
  };

  /** Re-reads everything under the prefix: after a reconnect, or a compaction the watch missed. */
  const resync = async () => {
    try {
      const { kvs } = await client.range(keys.prefix, { prefix: true });
      peers.contact(true);
      const stateKv = kvs.find(kv => kv.key === keys.state);
      const changed = stateKv !== undefined && (await adopt(stateKv));
      peers.replaceAll(kvs);
      if (changed) onChange?.();
    } catch (error) {
      logger.warn({ code: toBrokerError(error).code }, 'could not re-read the shared state; retrying');
    }
  };

  /** Batches are taken one after another, so the local copy is never overwritten by an older state. */
  let taking = Promise.resolve();
  const onEvents = (events: readonly WatchEvent[]) => {
    taking = taking.then(async () => {
      let changed = false;
      for (const event of events) {
        if (event.kv.key !== keys.state) {
          peers.apply(event);
          continue;
        }
        if (event.type === 'delete') {
          logger.warn(
            { key: keys.state },
            'the shared state was deleted in etcd; the next change writes it anew',
          );
          committed = undefined;
        } else if (!ownRevisions.has(event.kv.modRevision)) {
          try {
            changed = (await adopt(event.kv)) || changed;
          } catch (error) {
            logger.error({ code: toBrokerError(error).code }, 'ignoring an invalid shared state in etcd');
          }
        }
      }
      if (changed) onChange?.();
    });
  };

  return {
    location: `etcd ${options.prefix}`,

    async load() {
      let read: { kvs: StoredKv[]; revision: string };
      try {
        read = await client.range(keys.state, { prefix: false });
      } catch (error) {
        peers.contact(false);
        logger.warn(
          { code: toBrokerError(error).code, prefix: options.prefix },
          'etcd does not answer; starting from the local copy of the shared state',
        );
        return localCopy.load();
      }
      peers.contact(true);
      peers.seenRevision(read.revision);
      const kv = read.kvs[0];
      if (kv === undefined) {
        // None shared yet: a node moving from its own state file brings what it knew.
        unseeded = true;
        return localCopy.load();
      }
      try {
        await adopt(kv);
        return committed?.record.state;
      } catch (error) {
        // A damaged record in etcd must not stop every broker of the cluster at once: each
        // serves its local copy, and changes are refused until the record is repaired.
        if (!isBrokerError(error) || error.code !== 'STATE_CORRUPT') throw error;
        logger.error(
          { err: error.message },
          'the shared state in etcd is invalid; serving from the local copy until it is restored or deleted',
        );
        return localCopy.load();
      }
    },

    async save(state: BrokerState, keyId?: string) {
      const base = committed?.revision ?? '0';
      const previousKeyId = committed?.record.keyId;
      let result: { revision: string; record: StateRecord };
      try {
        if (keyId === undefined || previousKeyId === undefined || keyId === previousKeyId) {
          const record = stateRecord(state, keyId ?? previousKeyId ?? '', node, now());
          const put = await client.txn(
            [
              { key: keys.state, modRevision: base },
              { key: keys.proposal, modRevision: '0' },
            ],
            [{ put: { key: keys.state, value: encodeRecord(record) } }],
          );
          // The catch below re-reads the state once, for this refusal as for a promotion's.
          if (!put.succeeded) throw await conflict(client, keys);
          result = { revision: put.revision, record };
        } else {
          result = await promote({
            client,
            keys,
            node,
            lease: await membership.lease(),
            baseRevision: base,
            state,
            keyId,
            previousKeyId,
            timeoutMs: options.promotionTimeoutMs,
            now,
            onProposed: proposal => peers.proposing(proposal),
          }).finally(() => peers.proposing(undefined));
        }
      } catch (error) {
        if (isBrokerError(error) && error.code === 'STATE_CONFLICT') void resync();
        throw unreachable(error);
      }
      peers.contact(true);
      unseeded = false;
      ownRevisions.add(result.revision);
      if (ownRevisions.size > 64) ownRevisions.delete(ownRevisions.values().next().value as string);
      committed = { revision: result.revision, record: result.record };
      peers.committedKeyId(result.record.keyId);
      await keepLocalCopy(state);
    },

    watch(listener) {
      onChange = listener;
      unwatch = client.watch(keys.prefix, peers.nextRevision(), {
        onEvents,
        onResync: () => void resync(),
        onConnected: connected => peers.contact(connected),
      });
      return () => {
        unwatch?.();
        unwatch = undefined;
      };
    },

    shared: {
      join(local: LocalBroker) {
        peers.attach(local, async (proposalId, ack) =>
          answer(client, keys, proposalId, ack, await membership.lease()),
        );
        // Registering and the first re-read go on in the background: a start never waits on etcd.
        void membership.start(local);
        void resync();
      },
      needsSeed: () => unseeded,
      advertisedChanged: () => void membership.refresh(),
      view: () => peers.view(),
      async close() {
        unwatch?.();
        peers.close();
        await membership.close();
        client.close();
      },
    },
  };
}
