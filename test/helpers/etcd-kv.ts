// Writing raw values into a test etcd and reading its revision, through etcd's v3 JSON gateway
// (the product's etcd client only reads), and an etcd that serves TLS with client
// certificates, laid out as kubeadm does it.
import { mkdirSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { freePort, kubeBinary, pollFor, startProcess, type KubeProcess } from './kube-process.ts';

/** Client files for an https endpoint. */
export interface ClientTls {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** etcd's default --max-txn-ops. */
const OPS_PER_TXN = 128;

/** Puts every entry, 128 to a transaction. */
export async function putAll(
  url: string,
  entries: readonly (readonly [string, Buffer])[],
  tls?: ClientTls,
): Promise<void> {
  for (let start = 0; start < entries.length; start += OPS_PER_TXN) {
    const success = entries.slice(start, start + OPS_PER_TXN).map(([key, value]) => ({
      request_put: { key: Buffer.from(key, 'utf8').toString('base64'), value: value.toString('base64') },
    }));
    await postJson(`${url}/v3/kv/txn`, { success }, tls);
  }
}

/** The store's current revision (a read; it does not change it). */
export async function etcdRevision(url: string, tls?: ClientTls): Promise<string> {
  const answer = (await postJson(
    `${url}/v3/kv/range`,
    { key: Buffer.from('\0').toString('base64'), count_only: true },
    tls,
  )) as { header?: { revision?: string } };
  const revision = answer.header?.revision;
  if (revision === undefined) throw new Error(`no revision in ${JSON.stringify(answer)}`);
  return revision;
}

export interface TlsEtcd {
  readonly url: string;
  readonly process: KubeProcess;
  stop(): Promise<void>;
}

/**
 * An etcd on loopback that serves only TLS, with `server` as its certificate, and accepts only
 * clients whose certificate `clientCaFile` signed.
 */
export async function startTlsEtcd(
  dir: string,
  server: { readonly certFile: string; readonly keyFile: string },
  clientCaFile: string,
  client: ClientTls,
): Promise<TlsEtcd> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const url = `https://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const dataDir = join(dir, 'etcd-tls');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const child = startProcess('etcd-tls', kubeBinary('etcd'), [
    '--name=tls',
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=tls=${peer}`,
    `--cert-file=${server.certFile}`,
    `--key-file=${server.keyFile}`,
    '--client-cert-auth=true',
    `--trusted-ca-file=${clientCaFile}`,
    '--logger=zap',
    '--log-level=warn',
  ]);
  try {
    await pollFor(
      'etcd (TLS) /health',
      async () => {
        if (!child.running) throw new Error(`etcd exited:\n${child.output()}`);
        const health = (await requestJson(`${url}/health`, 'GET', undefined, client)) as { health?: string };
        return health.health === 'true' ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  } catch (error) {
    await child.stop(0);
    throw error;
  }
  return { url, process: child, stop: () => child.stop(10_000) };
}

function postJson(url: string, body: unknown, tls?: ClientTls): Promise<unknown> {
  return requestJson(url, 'POST', JSON.stringify(body), tls);
}

function requestJson(
  url: string,
  method: string,
  payload: string | undefined,
  tls?: ClientTls,
): Promise<unknown> {
  const secure = url.startsWith('https:');
  const send = secure ? httpsRequest : httpRequest;
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
    const req = send(url, options, res => {
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
