// This broker's registration among its peers: a record under an etcd lease that says what it
// advertises and what it can unwrap, refreshed on every heartbeat (a third of the lease) and
// whenever its key_id changes. A broker that stops beating drops out when its lease expires,
// so a promotion waits for it at most that long. A lease lost while etcd was away is granted
// anew on the next beat.
import type { LocalBroker } from '../broker/state/state-store.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import type { StoreClient } from '../etcd/store-client.ts';
import type { Logger } from '../log.ts';
import { encodeRecord, type ClusterKeys, type MemberRecord } from './records.ts';

export interface MembershipDeps {
  readonly client: StoreClient;
  readonly keys: ClusterKeys;
  readonly node: string;
  readonly version: string;
  readonly leaseTtlMs: number;
  readonly logger: Logger;
  readonly now: () => Date;
  /** Told whether etcd answered each beat. */
  readonly onContact: (reachable: boolean) => void;
}

export class Membership {
  readonly #deps: MembershipDeps;
  readonly #startedAt: string;
  #local: LocalBroker | undefined;
  #lease: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Beats run one at a time; a refresh asked for during one runs after it. */
  #beating: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(deps: MembershipDeps) {
    this.#deps = deps;
    this.#startedAt = deps.now().toISOString();
  }

  /** Registers `local` and starts beating; an unreachable etcd is retried on the next beat. */
  start(local: LocalBroker): Promise<void> {
    this.#local = local;
    const period = Math.max(500, Math.floor(this.#deps.leaseTtlMs / 3));
    this.#timer = setInterval(() => void this.refresh(), period).unref();
    return this.refresh();
  }

  /** The lease this broker's records live under, granted now if it has none. */
  async lease(): Promise<string> {
    await this.refresh();
    if (this.#lease === undefined)
      throw new BrokerError(
        'CLUSTER_UNAVAILABLE',
        `etcd granted this broker (${this.#deps.node}) no lease: it is unreachable; the change was refused so that the brokers do not diverge`,
      );
    return this.#lease;
  }

  /** Re-puts the record now (the key_id changed) and keeps the lease alive. */
  refresh(): Promise<void> {
    this.#beating = this.#beating.then(() => this.#beat());
    return this.#beating;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#beating;
    const lease = this.#lease;
    this.#lease = undefined;
    // Leaving at once spares the peers a wait for the lease to lapse.
    if (lease !== undefined) await this.#deps.client.revoke(lease).catch(() => undefined);
  }

  async #beat(retry = true): Promise<void> {
    const local = this.#local;
    if (local === undefined || this.#closed) return;
    const { client, keys, node, leaseTtlMs, logger } = this.#deps;
    try {
      if (this.#lease !== undefined && (await client.keepAlive(this.#lease)) <= 0) {
        logger.warn({ node }, 'cluster lease expired (etcd was unreachable too long); registering again');
        this.#lease = undefined;
      }
      this.#lease ??= await client.grantLease(Math.ceil(leaseTtlMs / 1000));
      const { keyId, unwrappable } = local.advertised();
      const record: MemberRecord = {
        node,
        version: this.#deps.version,
        keyId,
        unwrappable: [...unwrappable],
        startedAt: this.#startedAt,
        seenAt: this.#deps.now().toISOString(),
      };
      await client.put(keys.member(node), encodeRecord(record), { lease: this.#lease });
      this.#deps.onContact(true);
    } catch (error) {
      const { code } = toBrokerError(error);
      if (code === 'ETCD_LEASE_NOT_FOUND') {
        // etcd answers, but the lease lapsed while it did not: register again at once.
        this.#lease = undefined;
        if (retry) return this.#beat(false);
      }
      this.#deps.onContact(false);
      logger.debug({ code }, 'cluster heartbeat failed');
    }
  }
}
