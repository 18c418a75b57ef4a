// A client of etcd's v3 API for the brokers' shared state (DESIGN §8): reads, writes compared
// on revision, leases for the brokers' registrations, and a watch that survives a member
// going away. Every unary call has a deadline per member and is tried on the members in
// order, staying on the one that answered; keys are UTF-8 strings here and bytes on the wire;
// revisions and lease ids stay decimal strings (int64 does not fit a number).
import * as grpc from '@grpc/grpc-js';
import { BrokerError } from '../errors.ts';
import type { FailureContext } from './member-failure.ts';
import { classifyWith, connectMembers, firstAnswer } from './members.ts';
import type { EtcdSettingNames } from './names.ts';
import { prefixEnd } from './prefix-end.ts';
import {
  services,
  storedKv,
  type KvClient,
  type LeaseClient,
  type StoredKv,
  type WatchClient,
  type WireHeader,
  type WireKeepAliveResponse,
  type WireLeaseGrantResponse,
  type WireRangeResponse,
  type WireTxnResponse,
} from './store-wire.ts';
import type { EtcdTlsFiles } from './tls.ts';
import { startWatch, type WatchHandlers } from './store-watch.ts';

export type { StoredKv, WatchEvent } from './store-wire.ts';
export type { WatchHandlers } from './store-watch.ts';
export type { EtcdSettingNames } from './names.ts';

export type TxnOp =
  | { readonly put: { readonly key: string; readonly value: Buffer; readonly lease?: string } }
  | { readonly delete: { readonly key: string; readonly prefix?: boolean } };

export interface StoreClient {
  /** Keys under `prefix` (or the single key when `prefix` is false), with the store's revision. */
  range(key: string, options: { prefix: boolean }): Promise<{ kvs: StoredKv[]; revision: string }>;
  /** All `when` compares must hold (each: key's mod_revision equals modRevision; '0' means the key must not exist); then `then` runs atomically. */
  txn(
    when: readonly { key: string; modRevision: string }[],
    then: readonly TxnOp[],
  ): Promise<{ succeeded: boolean; revision: string }>;
  put(key: string, value: Buffer, options?: { lease?: string }): Promise<string>;
  delete(key: string, options?: { prefix?: boolean }): Promise<void>;
  grantLease(ttlSeconds: number): Promise<string>;
  /** One keep-alive round; returns the TTL etcd reports (0: the lease is gone). */
  keepAlive(lease: string): Promise<number>;
  revoke(lease: string): Promise<void>;
  /** Watches every key under `prefix` from `startRevision` (inclusive), reconnecting until the returned function is called. */
  watch(prefix: string, startRevision: string, handlers: WatchHandlers): () => void;
  close(): void;
}

export interface StoreClientOptions {
  /** `https://host:port` or `http://host:port`, tried in this order. */
  readonly endpoints: readonly string[];
  readonly tls?: EtcdTlsFiles;
  /** Deadline of one call on one member; default 3000 ms. */
  readonly callTimeoutMs?: number;
  /** What messages call the settings; default the config file's `etcd.*` keys. */
  readonly names?: EtcdSettingNames;
}

export const CONFIG_KEYS: EtcdSettingNames = {
  endpoints: 'etcd.endpoints',
  caFile: 'etcd.caFile',
  certFile: 'etcd.certFile',
  keyFile: 'etcd.keyFile',
  access: 'read and write access to the broker prefix',
};

const DEFAULT_CALL_TIMEOUT_MS = 3000;

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // A member that comes back is used again within seconds, not after grpc's 2-minute backoff.
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 5000,
  // Finds a member that vanished without closing its connections (the watch would wait forever);
  // etcd accepts pings every 5 s or slower on an open stream.
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5000,
};

export function createStoreClient(options: StoreClientOptions): StoreClient {
  const names = options.names ?? CONFIG_KEYS;
  const members = connectMembers({
    endpoints: options.endpoints,
    tls: options.tls,
    names,
    channelOptions: CHANNEL_OPTIONS,
  });
  const kv = members.clients<KvClient>(services.KV);
  const lease = members.clients<LeaseClient>(services.Lease);
  const watchers = members.clients<WatchClient>(services.Watch);
  const kvAt = (index: number) => kv[index] as KvClient;
  const leaseAt = (index: number) => lease[index] as LeaseClient;
  const timeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const watches = new Set<() => void>();

  /** One unary call, on the members in order; `what` names it in messages. */
  const unary = <T>(
    what: string,
    invoke: (
      index: number,
      options: grpc.CallOptions,
      callback: (error: grpc.ServiceError | null, response?: T) => void,
    ) => void,
  ): Promise<T> =>
    firstAnswer(
      members,
      index =>
        new Promise<T>((resolve, reject) =>
          invoke(index, { deadline: Date.now() + timeoutMs }, (error, response) =>
            error === null ? resolve(response as T) : reject(error),
          ),
        ),
      classifyWith((error, context) => requestFailure(what, error, context)),
    );

  const range = (key: string, prefix: boolean | undefined) => ({
    key: Buffer.from(key, 'utf8'),
    range_end: prefix === true ? prefixEnd(Buffer.from(key, 'utf8')) : Buffer.alloc(0),
  });
  const putRequest = (key: string, value: Buffer, leaseId: string | undefined) => ({
    key: Buffer.from(key, 'utf8'),
    value,
    lease: leaseId ?? '0',
  });

  return {
    async range(key, { prefix }) {
      const response = await unary<WireRangeResponse>('read', (index, call, done) =>
        kvAt(index).Range(range(key, prefix), call, done),
      );
      return { kvs: (response.kvs ?? []).map(storedKv), revision: revisionOf(response.header) };
    },
    async txn(when, then) {
      const request = {
        compare: when.map(({ key, modRevision }) => ({
          result: 'EQUAL',
          target: 'MOD',
          key: Buffer.from(key, 'utf8'),
          mod_revision: modRevision,
        })),
        success: then.map(op =>
          'put' in op
            ? { request_put: putRequest(op.put.key, op.put.value, op.put.lease) }
            : { request_delete_range: range(op.delete.key, op.delete.prefix) },
        ),
        failure: [],
      };
      const response = await unary<WireTxnResponse>('transaction', (index, call, done) =>
        kvAt(index).Txn(request, call, done),
      );
      return { succeeded: response.succeeded === true, revision: revisionOf(response.header) };
    },
    async put(key, value, putOptions) {
      const request = putRequest(key, value, putOptions?.lease);
      const response = await unary<{ header?: WireHeader }>('write', (index, call, done) =>
        kvAt(index).Put(request, call, done),
      );
      return revisionOf(response.header);
    },
    async delete(key, deleteOptions) {
      const request = range(key, deleteOptions?.prefix);
      await unary<unknown>('delete', (index, call, done) => kvAt(index).DeleteRange(request, call, done));
    },
    async grantLease(ttlSeconds) {
      const response = await unary<WireLeaseGrantResponse>('lease grant', (index, call, done) =>
        leaseAt(index).LeaseGrant({ TTL: ttlSeconds, ID: '0' }, call, done),
      );
      if ((response.error ?? '') !== '' || (response.ID ?? '0') === '0')
        throw new BrokerError('ETCD_REQUEST_FAILED', `etcd refused a lease of ${ttlSeconds} s`);
      return response.ID as string;
    },
    keepAlive: leaseId =>
      firstAnswer(
        members,
        index => keepAliveOnce(leaseAt(index), leaseId, timeoutMs),
        classifyWith((error, context) => requestFailure('lease keep-alive', error, context)),
      ),
    async revoke(leaseId) {
      try {
        await unary<unknown>('lease revoke', (index, call, done) =>
          leaseAt(index).LeaseRevoke({ ID: leaseId }, call, done),
        );
      } catch (error) {
        // Revoking a lease that already expired has the effect asked for.
        if (!(error instanceof BrokerError && error.code === 'ETCD_LEASE_NOT_FOUND')) throw error;
      }
    },
    watch(prefix, startRevision, handlers) {
      const stop = startWatch(
        { members, clients: watchers, createTimeoutMs: timeoutMs },
        { key: Buffer.from(prefix, 'utf8'), rangeEnd: prefixEnd(Buffer.from(prefix, 'utf8')), startRevision },
        handlers,
      );
      const stopOnce = () => {
        watches.delete(stopOnce);
        stop();
      };
      watches.add(stopOnce);
      return stopOnce;
    },
    close() {
      for (const stop of [...watches]) stop();
      members.close();
    },
  };
}

function revisionOf(header: WireHeader | undefined): string {
  return header?.revision ?? '0';
}

/**
 * A keep-alive round on its own short stream: one request, the first answer, half-close.
 * The deadline ends the stream whatever the member does, so a round never hangs.
 */
function keepAliveOnce(client: LeaseClient, lease: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const call = client.LeaseKeepAlive({ deadline: Date.now() + timeoutMs });
    let settled = false;
    call.on('data', (response: WireKeepAliveResponse) => {
      if (settled) return;
      settled = true;
      resolve(Number(response.TTL ?? '0'));
    });
    // After the answer, the stream's end (or a cancel) is of no interest.
    call.on('error', error => {
      if (!settled) reject(error);
      settled = true;
    });
    call.on('end', () => {
      if (!settled)
        reject(
          Object.assign(new Error('keep-alive'), {
            code: grpc.status.UNAVAILABLE,
            details: 'no answer',
            metadata: new grpc.Metadata(),
          }),
        );
      settled = true;
    });
    call.write({ ID: lease });
    call.end();
  });
}

/** An error etcd answered a request with (not a member failure: those move on to the next). */
function requestFailure(what: string, error: grpc.ServiceError, context: FailureContext): BrokerError {
  const details = typeof error.details === 'string' ? error.details : '';
  const where = `etcd at ${context.endpoint.url}`;
  if (error.code === grpc.status.NOT_FOUND && /lease not found/.test(details))
    return new BrokerError(
      'ETCD_LEASE_NOT_FOUND',
      `${where} holds no such lease (it expired or was revoked); register again with a new lease`,
    );
  const reason = /database space exceeded/.test(details)
    ? "etcd's database is full (alarm NOSPACE): compact and defragment it, then disarm the alarm"
    : /request is too large/.test(details)
      ? 'the request is larger than etcd accepts (--max-request-bytes)'
      : (grpc.status[error.code] ?? String(error.code));
  return new BrokerError(
    'ETCD_REQUEST_FAILED',
    `${where} refused a ${what} (${reason}); check etcd's health (etcdctl endpoint health) and try again`,
  );
}
