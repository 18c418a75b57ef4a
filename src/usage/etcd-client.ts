// A read-only client of etcd's v3 KV API (KV.Range only: the proto it loads has no method
// that writes), over gRPC with TLS client certificates as kubeadm lays them out. Tries the
// endpoints in order and stays on the first that answers; turns every failure into one
// message that names the endpoint, the file and the fix (the flags of `kms-broker usage`).
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { BrokerError } from '../errors.ts';
import { classifyWith, connectMembers, firstAnswer } from '../etcd/members.ts';
import type { EtcdSettingNames } from '../etcd/names.ts';
import type { EtcdTlsFiles } from '../etcd/tls.ts';

export type { EtcdTlsFiles } from '../etcd/tls.ts';

export interface EtcdClientOptions {
  /** `https://host:port` or `http://host:port`, tried in this order. */
  readonly endpoints: readonly string[];
  readonly tls: EtcdTlsFiles;
  /** Budget of one Range call. */
  readonly callTimeoutMs?: number;
}

export interface RangeRequest {
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  readonly limit: number;
  /** '0' for the newest. */
  readonly revision: string;
}

export interface RangeResponse {
  readonly revision: string;
  readonly kvs: readonly { readonly key: Buffer; readonly value: Buffer }[];
  readonly more: boolean;
  readonly count: number;
}

export interface EtcdClient {
  range(request: RangeRequest): Promise<RangeResponse>;
  close(): void;
}

/** A page too large for the receive limit: the caller asks for fewer keys. */
export class PageTooLarge extends Error {}

/** The largest page accepted; a page over it is asked again with fewer keys. */
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;
const DEFAULT_CALL_TIMEOUT_MS = 15_000;

const FLAGS: EtcdSettingNames = {
  endpoints: '--etcd-endpoints',
  caFile: '--etcd-cacert',
  certFile: '--etcd-cert',
  keyFile: '--etcd-key',
  access: 'read access to /registry',
};

interface WireRangeResponse {
  header?: { revision?: string };
  kvs?: { key?: Buffer; value?: Buffer }[];
  more?: boolean;
  count?: string;
}
type RangeMethod = (
  request: object,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: WireRangeResponse) => void,
) => void;
type KvClient = grpc.Client & { Range: RangeMethod };

const KV = (() => {
  const path = fileURLToPath(new URL('../../proto/etcd-kv.proto', import.meta.url));
  const definition = grpc.loadPackageDefinition(
    protoLoader.loadSync(path, { keepCase: true, longs: String, defaults: true }),
  );
  return (definition.etcdserverpb as grpc.GrpcObject).KV as grpc.ServiceClientConstructor;
})();

export function createEtcdClient(options: EtcdClientOptions): EtcdClient {
  const members = connectMembers({
    endpoints: options.endpoints,
    tls: options.tls,
    names: FLAGS,
    channelOptions: { 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES },
  });
  const clients = members.clients<KvClient>(KV);
  const timeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;

  const call = (index: number, request: RangeRequest) =>
    new Promise<WireRangeResponse>((resolve, reject) => {
      (clients[index] as KvClient).Range(
        { key: request.key, range_end: request.rangeEnd, limit: request.limit, revision: request.revision },
        { deadline: Date.now() + timeoutMs },
        (error, response) => (error === null ? resolve(response ?? {}) : reject(error)),
      );
    });

  return {
    async range(request) {
      const response = await firstAnswer(
        members,
        index => call(index, request),
        classifyWith((error, { endpoint }) => readFailure(error, endpoint.url, request.revision)),
      );
      return {
        revision: response.header?.revision ?? '0',
        kvs: (response.kvs ?? []).map(kv => ({
          key: kv.key ?? Buffer.alloc(0),
          value: kv.value ?? Buffer.alloc(0),
        })),
        more: response.more === true,
        count: Number(response.count ?? '0'),
      };
    },
    close() {
      members.close();
    },
  };
}

/** A Range the member answered with an error: the scan's own cases, never another member. */
function readFailure(error: grpc.ServiceError, url: string, revision: string): Error {
  const details = typeof error.details === 'string' ? error.details : '';
  const where = `etcd at ${url}`;
  if (error.code === grpc.status.RESOURCE_EXHAUSTED && /larger than max|message length/i.test(details))
    return new PageTooLarge();
  if (error.code === grpc.status.OUT_OF_RANGE && /compacted/.test(details))
    return new BrokerError(
      'ETCD_REVISION_COMPACTED',
      `${where} compacted revision ${revision} while the scan read it; run the scan again (a higher --rate finishes sooner than the apiserver's next compaction, every 5 minutes by default)`,
    );
  return new BrokerError(
    'ETCD_READ_FAILED',
    `${where} failed a read (${grpc.status[error.code] ?? error.code}); check etcd's health (etcdctl endpoint health) and run the scan again`,
  );
}
