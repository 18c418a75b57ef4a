// etcd's store API as grpc-js sees it (proto/etcd-store.proto, loaded once): the service
// constructors, the shapes of what comes back (int64 as decimal strings, so a revision or a
// lease id never loses precision), and how a key-value and an event become the client's.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface StoredKv {
  readonly key: string;
  readonly value: Buffer;
  readonly modRevision: string;
  readonly createRevision: string;
  /** '0': no lease. */
  readonly lease: string;
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  readonly kv: StoredKv;
}

export interface WireHeader {
  readonly revision?: string;
}
export interface WireKv {
  readonly key?: Buffer;
  readonly value?: Buffer;
  readonly mod_revision?: string;
  readonly create_revision?: string;
  readonly lease?: string;
}
export interface WireRangeResponse {
  readonly header?: WireHeader;
  readonly kvs?: readonly WireKv[];
}
export interface WireTxnResponse {
  readonly header?: WireHeader;
  readonly succeeded?: boolean;
}
export interface WireLeaseGrantResponse {
  readonly ID?: string;
  readonly error?: string;
}
export interface WireKeepAliveResponse {
  readonly TTL?: string;
}
export interface WireWatchResponse {
  readonly header?: WireHeader;
  readonly created?: boolean;
  readonly canceled?: boolean;
  readonly compact_revision?: string;
  readonly events?: readonly { readonly type?: string; readonly kv?: WireKv }[];
}

type Unary<Response> = (
  request: object,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: Response) => void,
) => grpc.ClientUnaryCall;

export type KvClient = grpc.Client & {
  Range: Unary<WireRangeResponse>;
  Put: Unary<{ header?: WireHeader }>;
  DeleteRange: Unary<{ header?: WireHeader }>;
  Txn: Unary<WireTxnResponse>;
};
export type LeaseClient = grpc.Client & {
  LeaseGrant: Unary<WireLeaseGrantResponse>;
  LeaseRevoke: Unary<{ header?: WireHeader }>;
  LeaseKeepAlive(options: grpc.CallOptions): grpc.ClientDuplexStream<object, WireKeepAliveResponse>;
};
export type WatchClient = grpc.Client & {
  Watch(
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
  ): grpc.ClientDuplexStream<object, WireWatchResponse>;
};

export const services = (() => {
  const path = fileURLToPath(new URL('../../proto/etcd-store.proto', import.meta.url));
  const definition = grpc.loadPackageDefinition(
    // enums: String, so an event's type reads 'PUT' or 'DELETE'.
    protoLoader.loadSync(path, { keepCase: true, longs: String, enums: String, defaults: true }),
  );
  const pkg = definition.etcdserverpb as grpc.GrpcObject;
  return {
    KV: pkg.KV as grpc.ServiceClientConstructor,
    Lease: pkg.Lease as grpc.ServiceClientConstructor,
    Watch: pkg.Watch as grpc.ServiceClientConstructor,
  };
})();

export function storedKv(kv: WireKv): StoredKv {
  return {
    key: (kv.key ?? Buffer.alloc(0)).toString('utf8'),
    value: kv.value ?? Buffer.alloc(0),
    modRevision: kv.mod_revision ?? '0',
    createRevision: kv.create_revision ?? '0',
    lease: kv.lease ?? '0',
  };
}

export function watchEvents(response: WireWatchResponse): WatchEvent[] {
  return (response.events ?? []).map(event => ({
    type: event.type === 'DELETE' ? 'delete' : 'put',
    kv: storedKv(event.kv ?? {}),
  }));
}
