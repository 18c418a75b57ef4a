// A real etcd for the end-to-end tests, on loopback (plain, or TLS with client certificates as
// kubeadm lays it out), and the tests' second pair of eyes: it
// reads what the apiserver stored through etcd's v3 JSON gateway (no etcdctl needed) and
// says how each value is protected, down to the key_id inside a KMS v2 EncryptedObject.
import { mkdirSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { freePort, kubeBinary, pollFor, startProcess, type KubeProcess } from './kube-process.ts';

const START_TIMEOUT_MS = 30_000;

export interface Etcd {
  /** The client URL the apiserver is given (--etcd-servers). */
  readonly url: string;
  /** Every stored Secret, by "<namespace>/<name>", as raw stored bytes. */
  secrets(): Promise<Map<string, Buffer>>;
  stop(): Promise<void>;
}

/** Client files for an https endpoint. */
export interface ClientTls {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/**
 * etcd serving only TLS, with `server` as its certificate, accepting only clients whose
 * certificate `clientCaFile` signed; `client` is what the tests' own requests present.
 */
export interface EtcdTls {
  readonly server: { readonly certFile: string; readonly keyFile: string };
  readonly clientCaFile: string;
  readonly client: ClientTls;
}

/** One etcd member's identity and addresses; peers always speak plain http on loopback. */
export interface EtcdMemberSpec {
  readonly name: string;
  readonly dataDir: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  /** `name=peerUrl,...` of every member. */
  readonly initialCluster: string;
  readonly tls?: EtcdTls | undefined;
}

/** Starts one member; it serves once enough members of its cluster run (see `waitHealthy`). */
export function spawnEtcdMember(spec: EtcdMemberSpec): KubeProcess {
  mkdirSync(spec.dataDir, { recursive: true, mode: 0o700 });
  const { tls } = spec;
  const serverTls =
    tls === undefined
      ? []
      : [
          `--cert-file=${tls.server.certFile}`,
          `--key-file=${tls.server.keyFile}`,
          '--client-cert-auth=true',
          `--trusted-ca-file=${tls.clientCaFile}`,
        ];
  const child = startProcess(spec.name, kubeBinary('etcd'), [
    `--name=${spec.name}`,
    `--data-dir=${spec.dataDir}`,
    `--listen-client-urls=${spec.clientUrl}`,
    `--advertise-client-urls=${spec.clientUrl}`,
    `--listen-peer-urls=${spec.peerUrl}`,
    `--initial-advertise-peer-urls=${spec.peerUrl}`,
    `--initial-cluster=${spec.initialCluster}`,
    ...serverTls,
    '--logger=zap',
    '--log-level=warn',
  ]);
  return child;
}

/**
 * Waits, bounded, until the member `child` at `url` says it is healthy (it has a leader);
 * its output is in the error when it exited instead.
 */
export async function waitHealthy(
  child: KubeProcess,
  url: string,
  tls: ClientTls | undefined,
): Promise<void> {
  await pollFor(
    `${child.name} /health at ${url}`,
    async () => {
      if (!child.running) throw new Error(`${child.name} exited:\n${child.output()}`);
      const health = (await etcdJson(`${url}/health`, 'GET', undefined, tls)) as { health?: string };
      return health.health === 'true' ? true : undefined;
    },
    { timeoutMs: START_TIMEOUT_MS, intervalMs: 100 },
  );
}

export async function startEtcd(dir: string, tls?: EtcdTls): Promise<Etcd> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const url = `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const name = tls === undefined ? 'etcd' : 'etcd-tls';
  const child = spawnEtcdMember({
    name,
    dataDir: join(dir, name),
    clientUrl: url,
    peerUrl,
    initialCluster: `${name}=${peerUrl}`,
    tls,
  });
  try {
    await waitHealthy(child, url, tls?.client);
  } catch (error) {
    await child.stop(0);
    throw error;
  }
  const gateway = (path: string, body: unknown) => etcdJson(`${url}${path}`, 'POST', body, tls?.client);
  return {
    url,
    async secrets() {
      const prefix = '/registry/secrets/';
      const answer = (await gateway('/v3/kv/range', {
        key: base64(prefix),
        range_end: base64(prefixEnd(prefix)),
      })) as { kvs?: { key: string; value: string }[] };
      const found = new Map<string, Buffer>();
      for (const kv of answer.kvs ?? [])
        found.set(
          Buffer.from(kv.key, 'base64').toString('utf8').slice(prefix.length),
          Buffer.from(kv.value, 'base64'),
        );
      return found;
    },
    stop: () => child.stop(10_000),
  };
}

const base64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** etcd's "every key with this prefix": the prefix with its last byte incremented. */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/**
 * One request to etcd (its v3 JSON gateway, or /health) that must answer 200 with JSON;
 * `tls` for an https endpoint.
 */
export function etcdJson(url: string, method: string, body: unknown, tls?: ClientTls): Promise<unknown> {
  const secure = url.startsWith('https:');
  const options = {
    method,
    timeout: 10_000,
    agent: false as const,
    ...(secure &&
      tls !== undefined && {
        ca: readFileSync(tls.caFile),
        cert: readFileSync(tls.certFile),
        key: readFileSync(tls.keyFile),
      }),
  };
  return new Promise((resolve, reject) => {
    const req = (secure ? httpsRequest : httpRequest)(url, options, res => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200)
          return reject(new Error(`${method} ${url}: HTTP ${res.statusCode}: ${text}`));
        try {
          resolve(JSON.parse(text));
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within 10 s`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

// ---------------------------------------------------------------------------------------------
// What a stored value is

const EncryptedObject = new protobuf.Root()
  .loadSync(fileURLToPath(new URL('../../proto/kms-v2-encrypted-object.proto', import.meta.url)), {
    keepCase: true,
  })
  .lookupType('v2.EncryptedObject');

interface EncryptedObjectMessage {
  keyID: string;
  encryptedDEKSource: Uint8Array;
  annotations: Record<string, Uint8Array>;
}

export type StoredValue =
  | {
      readonly kind: 'kms-v2';
      readonly provider: string;
      readonly keyId: string;
      readonly encryptedDekSource: Buffer;
      readonly annotationKeys: readonly string[];
    }
  | { readonly kind: 'kms-v1'; readonly provider: string }
  | { readonly kind: 'aescbc'; readonly key: string }
  /** Kubernetes' own unencrypted protobuf encoding ("k8s\0"). */
  | { readonly kind: 'plain' };

const PREFIX = /^k8s:enc:(kms:v2|kms:v1|aescbc:v1):([^:]+):/;

/** Reads a stored value's envelope; throws on anything the tests do not expect to see. */
export function decodeStored(value: Buffer): StoredValue {
  if (value.subarray(0, 4).equals(Buffer.from('k8s\0', 'latin1'))) return { kind: 'plain' };
  const head = PREFIX.exec(value.subarray(0, 300).toString('latin1'));
  if (head === null) throw new Error(`unknown stored format: ${value.subarray(0, 24).toString('latin1')}…`);
  const [prefix, scheme, name] = head as unknown as [string, string, string];
  if (scheme === 'aescbc:v1') return { kind: 'aescbc', key: name };
  if (scheme === 'kms:v1') return { kind: 'kms-v1', provider: name };
  const object = EncryptedObject.toObject(EncryptedObject.decode(value.subarray(prefix.length)), {
    bytes: Buffer,
  }) as EncryptedObjectMessage;
  return {
    kind: 'kms-v2',
    provider: name,
    keyId: object.keyID,
    encryptedDekSource: Buffer.from(object.encryptedDEKSource),
    annotationKeys: Object.keys(object.annotations ?? {}).sort(),
  };
}
