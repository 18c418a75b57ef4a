// A read-only client of etcd's v3 KV API (KV.Range only: the proto it loads has no method
// that writes), over gRPC with TLS client certificates as kubeadm lays them out. Tries the
// endpoints in order and stays on the first that answers; turns every failure into one
// message that names the endpoint, the file and the fix.
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { BrokerError } from '../errors.ts';

export interface EtcdTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

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
  const endpoints = options.endpoints.map(parseEndpoint);
  const credentials = endpoints.some(endpoint => endpoint.tls) ? tlsCredentials(options.tls) : undefined;
  const clients = endpoints.map(endpoint => {
    const channel = endpoint.tls
      ? (credentials as grpc.ChannelCredentials)
      : grpc.credentials.createInsecure();
    return new KV(endpoint.target, channel, {
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
    }) as unknown as KvClient;
  });
  const timeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  /** The endpoint that answered last: later pages go there first. */
  let current = 0;

  const call = (index: number, request: RangeRequest) =>
    new Promise<WireRangeResponse>((resolve, reject) => {
      const client = clients[index] as KvClient;
      client.Range(
        { key: request.key, range_end: request.rangeEnd, limit: request.limit, revision: request.revision },
        { deadline: Date.now() + timeoutMs },
        (error, response) => (error === null ? resolve(response ?? {}) : reject(error)),
      );
    });

  return {
    async range(request) {
      const failures: BrokerError[] = [];
      for (let attempt = 0; attempt < clients.length; attempt++) {
        const index = (current + attempt) % clients.length;
        const endpoint = endpoints[index] as Endpoint;
        try {
          const response = await call(index, request);
          current = index;
          return {
            revision: response.header?.revision ?? '0',
            kvs: (response.kvs ?? []).map(kv => ({
              key: kv.key ?? Buffer.alloc(0),
              value: kv.value ?? Buffer.alloc(0),
            })),
            more: response.more === true,
            count: Number(response.count ?? '0'),
          };
        } catch (error) {
          const failure = classify(error as grpc.ServiceError, endpoint, options.tls, request.revision);
          if (failure instanceof PageTooLarge) throw failure;
          // Another member may answer: connection-level failures move on to it.
          if (failure.code !== 'ETCD_UNREACHABLE' && failure.code !== 'ETCD_AUTH_FAILED') throw failure;
          failures.push(failure);
        }
      }
      throw failures.find(failure => failure.code === 'ETCD_AUTH_FAILED') ?? joined(failures);
    },
    close() {
      for (const client of clients) client.close();
    },
  };
}

interface Endpoint {
  readonly url: string;
  readonly target: string;
  readonly tls: boolean;
}

function parseEndpoint(url: string): Endpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BrokerError(
      'INVALID_REQUEST',
      `--etcd-endpoints: '${url}' is not a URL; write https://host:2379`,
    );
  }
  if ((parsed.protocol !== 'https:' && parsed.protocol !== 'http:') || parsed.host === '')
    throw new BrokerError(
      'INVALID_REQUEST',
      `--etcd-endpoints: '${url}' must be https://host:port (or http:// for an etcd without TLS)`,
    );
  const port = parsed.port === '' ? '2379' : parsed.port;
  return { url, target: `${parsed.hostname}:${port}`, tls: parsed.protocol === 'https:' };
}

function tlsCredentials(files: EtcdTlsFiles): grpc.ChannelCredentials {
  const ca = readTlsFile('--etcd-cacert', files.caFile, "the CA that signed etcd's serving certificate");
  const cert = readTlsFile('--etcd-cert', files.certFile, 'a client certificate etcd trusts');
  const key = readTlsFile('--etcd-key', files.keyFile, 'the private key of --etcd-cert');
  try {
    // Checks the PEM and that key and certificate belong together, before any connection.
    createSecureContext({ ca, cert, key });
  } catch (error) {
    throw new BrokerError(
      'ETCD_TLS_FILE_UNREADABLE',
      `--etcd-cacert ${files.caFile}, --etcd-cert ${files.certFile}, --etcd-key ${files.keyFile}: not a PEM CA certificate, client certificate and its matching private key (${opensslReason(error)}); on kubeadm use /etc/kubernetes/pki/etcd/ca.crt and /etc/kubernetes/pki/apiserver-etcd-client.{crt,key}`,
    );
  }
  return grpc.credentials.createSsl(ca, key, cert);
}

function readTlsFile(flag: string, path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    const fix =
      code === 'EACCES' || code === 'EPERM'
        ? 'run as a user that may read it (root on a kubeadm control-plane node)'
        : `pass ${what} with ${flag}`;
    throw new BrokerError('ETCD_TLS_FILE_UNREADABLE', `${flag}: cannot read ${path} (${code}); ${fix}`);
  }
}

/** OpenSSL's code for a bad PEM or a mismatched key: a name, never the key material. */
function opensslReason(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^[A-Z0-9_]+$/.test(code) ? code : 'invalid';
}

function classify(
  error: grpc.ServiceError,
  endpoint: Endpoint,
  files: EtcdTlsFiles,
  revision: string,
): BrokerError | PageTooLarge {
  const details = typeof error.details === 'string' ? error.details : '';
  const where = `etcd at ${endpoint.url}`;
  switch (error.code) {
    case grpc.status.RESOURCE_EXHAUSTED:
      if (/larger than max|message length/i.test(details)) return new PageTooLarge();
      break;
    case grpc.status.OUT_OF_RANGE:
      if (/compacted/.test(details))
        return new BrokerError(
          'ETCD_REVISION_COMPACTED',
          `${where} compacted revision ${revision} while the scan read it; run the scan again (a higher --rate finishes sooner than the apiserver's next compaction, every 5 minutes by default)`,
        );
      break;
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} refused the client certificate ${files.certFile} (${grpc.status[error.code]}); use a certificate etcd grants read access to /registry, e.g. kubeadm's /etc/kubernetes/pki/apiserver-etcd-client.crt`,
      );
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return connectionFailure(error.code, details, endpoint, files);
  }
  return new BrokerError(
    'ETCD_READ_FAILED',
    `${where} failed a read (${grpc.status[error.code] ?? error.code}); check etcd's health (etcdctl endpoint health) and run the scan again`,
  );
}

function connectionFailure(
  code: grpc.status,
  details: string,
  endpoint: Endpoint,
  files: EtcdTlsFiles,
): BrokerError {
  const where = `etcd at ${endpoint.url}`;
  if (endpoint.tls) {
    if (
      /self[- ]signed|unable to (get|verify)|verify failed|unknown ca/i.test(details) &&
      !/alert/i.test(details)
    )
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} presented a certificate that ${files.caFile} did not sign; pass etcd's CA with --etcd-cacert (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)`,
      );
    if (/altname|does not match|hostname/i.test(details))
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} presented a certificate that does not name '${endpoint.target.replace(/:\d+$/, '')}'; use an address its certificate lists (kubeadm: 127.0.0.1 or the node's IP)`,
      );
    if (/alert|certificate required|bad certificate|handshake/i.test(details))
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} refused the client certificate ${files.certFile}; use one signed by etcd's client CA (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.crt with its .key)`,
      );
    if (/wrong version number|packet length|ssl|tls/i.test(details))
      return new BrokerError(
        'ETCD_UNREACHABLE',
        `${where} does not speak TLS (${errnoOf(details) ?? 'TLS handshake failed'}); if etcd serves plain HTTP use http://`,
      );
  }
  const cause =
    errnoOf(details) ?? (code === grpc.status.DEADLINE_EXCEEDED ? 'no answer in time' : 'connection failed');
  return new BrokerError(
    'ETCD_UNREACHABLE',
    `cannot reach ${where} (${cause}); check that etcd runs and listens there (kubeadm: https://127.0.0.1:2379 on a control-plane node), or pass --etcd-endpoints${endpoint.tls ? '' : ' (https:// if etcd serves TLS)'}`,
  );
}

function errnoOf(details: string): string | undefined {
  return /\b(E[A-Z]{3,}[A-Z0-9]*)\b/.exec(details)?.[1];
}

function joined(failures: readonly BrokerError[]): BrokerError {
  if (failures.length === 1) return failures[0] as BrokerError;
  return new BrokerError('ETCD_UNREACHABLE', failures.map(failure => failure.message).join('; '));
}
