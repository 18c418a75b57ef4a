// A real etcd for the end-to-end tests, on loopback, and the tests' second pair of eyes: it
// reads what the apiserver stored through etcd's v3 JSON gateway (no etcdctl needed) and
// says how each value is protected, down to the key_id inside a KMS v2 EncryptedObject.
import { mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { freePort, kubeBinary, pollFor, startProcess } from './kube-process.ts';

const START_TIMEOUT_MS = 30_000;

export interface Etcd {
  /** The client URL the apiserver is given (--etcd-servers). */
  readonly url: string;
  /** Every stored Secret, by "<namespace>/<name>", as raw stored bytes. */
  secrets(): Promise<Map<string, Buffer>>;
  stop(): Promise<void>;
}

export async function startEtcd(dir: string): Promise<Etcd> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const dataDir = join(dir, 'etcd');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const child = startProcess('etcd', kubeBinary('etcd'), [
    '--name=e2e',
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=e2e=${peer}`,
    '--logger=zap',
    '--log-level=warn',
  ]);
  const gateway = (path: string, body: unknown) => postJson(`${url}${path}`, body);
  try {
    await pollFor(
      'etcd /health',
      async () => {
        if (!child.running) throw new Error(`etcd exited:\n${child.output()}`);
        const health = (await getJson(`${url}/health`)) as { health?: string };
        return health.health === 'true' ? true : undefined;
      },
      { timeoutMs: START_TIMEOUT_MS, intervalMs: 100 },
    );
  } catch (error) {
    await child.stop(0);
    throw error;
  }
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

function getJson(url: string): Promise<unknown> {
  return httpJson(url, 'GET', undefined);
}

function postJson(url: string, body: unknown): Promise<unknown> {
  return httpJson(url, 'POST', JSON.stringify(body));
}

function httpJson(url: string, method: string, payload: string | undefined): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, timeout: 10_000, agent: false }, res => {
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
    req.end(payload);
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
