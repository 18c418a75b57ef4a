// One kube-apiserver on loopback for the end-to-end tests: its port, kubeconfig, encryption
// config and process, on an etcd and credentials (CA, serving certificate, service-account
// keys, a system:masters token) that several apiservers of one cluster can share.
import { execFile } from 'node:child_process';
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { writeEncryptionConfig, type Provider } from './kube-encryption.ts';
import { freePort, kubeBinary, pollFor, startProcess, type KubeProcess } from './kube-process.ts';
import { createCa, issueCertificate } from './x509.ts';

export const READY_TIMEOUT_MS = 90_000;
const KUBECTL_TIMEOUT_MS = 60_000;

export interface ApiserverOptions {
  /** Providers for Secrets, first one writes; none: no --encryption-provider-config. */
  readonly providers?: readonly Provider[];
  /** The resources the providers encrypt (default: secrets). */
  readonly resources?: readonly string[];
  /** e.g. 'KMSv1=true'. */
  readonly featureGates?: string;
  /** e.g. 'storagemigration.k8s.io/v1=false' (an apiserver without the migration API). */
  readonly runtimeConfig?: string;
}

export interface ApiResponse {
  readonly status: number;
  readonly text: string;
}

export interface Apiserver {
  /**
   * Starts the apiserver, stopping a running one first (etcd and its data stay). Resolves with
   * the milliseconds until /readyz answered 200.
   */
  startApiserver(options: ApiserverOptions): Promise<number>;
  /** Starts the apiserver like startApiserver, without waiting for it to be ready. */
  launchApiserver(options: ApiserverOptions): Promise<void>;
  /** Resolves with the first apiserver log line that matches; bounded in time. */
  waitForApiserverLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** An authenticated GET on the apiserver (e.g. /healthz/kms-providers). */
  get(path: string): Promise<ApiResponse>;
  /** An authenticated request to the REST API; `body` is sent as JSON. */
  request(method: string, path: string, body?: unknown): Promise<ApiResponse>;
  /** The kubeconfig (system:masters token) that kubectl and the controller manager use. */
  readonly kubeconfig: string;
  /** The apiserver's URL, https://127.0.0.1:<port>. */
  readonly server: string;
  /** The EncryptionConfiguration file the apiserver was last started with. */
  readonly encryptionConfig: string;
  /** Runs kubectl against the apiserver; resolves with stdout, rejects with stderr. */
  kubectl(args: readonly string[], input?: string): Promise<string>;
  /** The first and last lines of the running (or last) apiserver's output, for failure messages. */
  apiserverOutput(): string;
  /** SIGTERM (SIGKILL after 30 s) to the apiserver, if one runs; stop it before its etcd. */
  stopApiserver(): Promise<void>;
}

export interface Credentials {
  readonly caFile: string;
  readonly caPem: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly saPublic: string;
  readonly saPrivate: string;
  readonly tokenFile: string;
  readonly token: string;
}

export function createCredentials(dir: string): Credentials {
  const ca = createCa(join(dir, 'pki'), 'kms-broker e2e CA');
  const serving = issueCertificate(ca, join(dir, 'pki'), {
    commonName: 'kube-apiserver',
    usage: 'server',
    altNames: ['IP:127.0.0.1', 'DNS:localhost'],
  });
  // Service-account tokens are signed with this pair; nothing in the tests uses them.
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const saPublic = join(dir, 'pki', 'sa.pub');
  const saPrivate = join(dir, 'pki', 'sa.key');
  writeFileSync(saPublic, publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(saPrivate, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(dir, 'tokens.csv');
  writeFileSync(tokenFile, `${token},e2e-admin,e2e-admin,system:masters\n`, { mode: 0o600 });
  return { caFile: ca.certFile, caPem: ca.pem, ...serving, saPublic, saPrivate, tokenFile, token };
}

function writeKubeconfig(path: string, server: string, credentials: Credentials): void {
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'e2e', cluster: { server, 'certificate-authority': credentials.caFile } }],
    users: [{ name: 'e2e-admin', user: { token: credentials.token } }],
    contexts: [{ name: 'e2e', context: { cluster: 'e2e', user: 'e2e-admin' } }],
    'current-context': 'e2e',
  };
  writeFileSync(path, stringify(kubeconfig), { mode: 0o600 });
}

/** An apiserver (not started yet) on `etcdUrl`, its kubeconfig and encryption config in `dir`. */
export async function apiserverOn(
  dir: string,
  etcdUrl: string,
  credentials: Credentials,
): Promise<Apiserver> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const server = `https://127.0.0.1:${port}`;
  const kubeconfig = join(dir, 'kubeconfig');
  writeKubeconfig(kubeconfig, server, credentials);
  const encryptionConfig = join(dir, 'encryption.yaml');
  let apiserver: KubeProcess | undefined;

  const send = (method: string, path: string, body?: unknown) =>
    new Promise<ApiResponse>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string> = { authorization: `Bearer ${credentials.token}` };
      if (payload !== undefined) headers['content-type'] = 'application/json';
      const req = request(
        `${server}${path}`,
        { method, ca: credentials.caPem, headers, timeout: 10_000, agent: false },
        res => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          );
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  const get = (path: string) => send('GET', path);

  const stopApiserver = async () => {
    await apiserver?.stop(30_000);
    apiserver = undefined;
  };

  const launchApiserver = async (options: ApiserverOptions): Promise<KubeProcess> => {
    await stopApiserver();
    const args = [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      '--advertise-address=127.0.0.1',
      `--tls-cert-file=${credentials.certFile}`,
      `--tls-private-key-file=${credentials.keyFile}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${credentials.saPublic}`,
      `--service-account-signing-key-file=${credentials.saPrivate}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      `--token-auth-file=${credentials.tokenFile}`,
      '--authorization-mode=RBAC',
      // A loopback address cannot be published as the kubernetes Service's endpoint.
      '--endpoint-reconciler-type=none',
      // Level 2 logs why a KMS probe failed ("kms plugin failed health check probe").
      '-v=2',
    ];
    if (options.providers !== undefined) {
      writeEncryptionConfig(encryptionConfig, options.providers, options.resources);
      args.push(`--encryption-provider-config=${encryptionConfig}`);
    }
    if (options.featureGates !== undefined) args.push(`--feature-gates=${options.featureGates}`);
    if (options.runtimeConfig !== undefined) args.push(`--runtime-config=${options.runtimeConfig}`);
    apiserver = startProcess('kube-apiserver', kubeBinary('kube-apiserver'), args);
    return apiserver;
  };

  return {
    kubeconfig,
    server,
    encryptionConfig,
    async launchApiserver(options) {
      await launchApiserver(options);
    },
    async startApiserver(options) {
      const started = Date.now();
      const child = await launchApiserver(options);
      await pollFor(
        'kube-apiserver /readyz',
        async () => {
          if (!child.running) throw new Error(`kube-apiserver exited:\n${child.output()}`);
          const readyz = await get('/readyz?verbose');
          if (readyz.status === 200) return true;
          // Thrown, so that a timeout names the checks that still fail.
          throw new Error(
            `/readyz ${readyz.status}: ${readyz.text
              .split('\n')
              .filter(line => line.startsWith('[-]'))
              .join('; ')}`,
          );
        },
        { timeoutMs: READY_TIMEOUT_MS, intervalMs: 200 },
      ).catch((error: unknown) => {
        throw new Error(`${String(error)}\n--- kube-apiserver output ---\n${child.output()}`);
      });
      return Date.now() - started;
    },
    waitForApiserverLog(pattern, timeoutMs = 30_000) {
      if (apiserver === undefined) return Promise.reject(new Error('no kube-apiserver is running'));
      return apiserver.waitForLine(pattern, timeoutMs);
    },
    get,
    request: send,
    kubectl(args, input) {
      return new Promise((resolve, reject) => {
        const child = execFile(
          kubeBinary('kubectl'),
          ['--kubeconfig', kubeconfig, ...args],
          { timeout: KUBECTL_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
          (error, stdout, stderr) => {
            if (error === null) resolve(stdout);
            else reject(new Error(`kubectl ${args.join(' ')}: ${stderr.trim() || error.message}`));
          },
        );
        child.stdin?.end(input);
      });
    },
    apiserverOutput: () => apiserver?.output() ?? '',
    stopApiserver,
  };
}
