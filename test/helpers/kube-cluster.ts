// A minimal real control plane for the end-to-end tests: etcd and kube-apiserver on loopback,
// a generated CA and serving certificate, a system:masters bearer token, and kubectl with a
// kubeconfig that trusts that CA. The apiserver can be restarted with another
// EncryptionConfiguration while etcd (and so every stored object) stays.
import { execFile } from 'node:child_process';
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startEtcd, type Etcd } from './kube-etcd.ts';
import { writeEncryptionConfig, type Provider } from './kube-encryption.ts';
import { freePort, kubeBinary, pollFor, startProcess, type KubeProcess } from './kube-process.ts';
import { createCa, issueCertificate } from './x509.ts';

const READY_TIMEOUT_MS = 90_000;
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

export interface Cluster {
  readonly etcd: Etcd;
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
  /** The kubeconfig (system:masters token) that kubectl and the controller manager use. */
  readonly kubeconfig: string;
  /** The apiserver's URL, https://127.0.0.1:<port>. */
  readonly server: string;
  /** The EncryptionConfiguration file the apiserver was last started with. */
  readonly encryptionConfig: string;
  /**
   * Starts kube-controller-manager with only the controllers StorageVersionMigrations need:
   * storage-version-migrator-controller and the garbage collector whose object graph it reads.
   * Resolves when the migrator has started; stopController stops it (by its PID).
   */
  startControllerManager(): Promise<KubeProcess>;
  stopControllerManager(): Promise<void>;
  /** Runs kubectl against the apiserver; resolves with stdout, rejects with stderr. */
  kubectl(args: readonly string[], input?: string): Promise<string>;
  /** Controller manager, apiserver (it ignores SIGTERM while etcd is gone), etcd, the files. */
  stop(): Promise<void>;
}

interface Credentials {
  readonly caFile: string;
  readonly caPem: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly saPublic: string;
  readonly saPrivate: string;
  readonly tokenFile: string;
  readonly token: string;
}

function createCredentials(dir: string): Credentials {
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

export async function startCluster(): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-kube-'));
  let etcd: Etcd | undefined;
  try {
    const credentials = createCredentials(dir);
    etcd = await startEtcd(dir);
    return await clusterOn(dir, etcd, credentials);
  } catch (error) {
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

async function clusterOn(dir: string, etcd: Etcd, credentials: Credentials): Promise<Cluster> {
  const port = await freePort();
  const server = `https://127.0.0.1:${port}`;
  const kubeconfig = join(dir, 'kubeconfig');
  writeKubeconfig(kubeconfig, server, credentials);
  const encryptionConfig = join(dir, 'encryption.yaml');
  let apiserver: KubeProcess | undefined;

  const get = (path: string) =>
    new Promise<ApiResponse>((resolve, reject) => {
      const req = request(
        `${server}${path}`,
        {
          ca: credentials.caPem,
          headers: { authorization: `Bearer ${credentials.token}` },
          timeout: 10_000,
          agent: false,
        },
        res => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          );
        },
      );
      req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within 10 s`)));
      req.on('error', reject);
      req.end();
    });

  let controllerManager: KubeProcess | undefined;
  const stopControllerManager = async () => {
    await controllerManager?.stop(10_000);
    controllerManager = undefined;
  };

  const stopApiserver = async () => {
    await apiserver?.stop(30_000);
    apiserver = undefined;
  };

  const launchApiserver = async (options: ApiserverOptions): Promise<KubeProcess> => {
    await stopApiserver();
    const args = [
      `--etcd-servers=${etcd.url}`,
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
    etcd,
    kubeconfig,
    server,
    encryptionConfig,
    async startControllerManager() {
      await stopControllerManager();
      const child = startProcess('kube-controller-manager', kubeBinary('kube-controller-manager'), [
        `--kubeconfig=${kubeconfig}`,
        '--controllers=garbage-collector-controller,storage-version-migrator-controller',
        '--leader-elect=false',
        '--bind-address=127.0.0.1',
        `--secure-port=${await freePort()}`,
        `--cert-dir=${join(dir, 'kcm-certs')}`,
        '-v=2',
      ]);
      controllerManager = child;
      try {
        await child.waitForLine(
          /"Starting" controller="storage-version-migrator-controller"/,
          READY_TIMEOUT_MS,
        );
      } catch (error) {
        await stopControllerManager();
        throw new Error(`${String(error)}\n--- kube-controller-manager output ---\n${child.output()}`, {
          cause: error,
        });
      }
      return child;
    },
    stopControllerManager,
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
    async stop() {
      try {
        await stopControllerManager();
        await stopApiserver();
        await etcd.stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** What an operator types: `kubectl create secret generic NAME --from-literal=k=VALUE`. */
export async function createSecret(
  cluster: Cluster,
  name: string,
  value: string,
  namespace = 'default',
): Promise<void> {
  await cluster.kubectl(['create', 'secret', 'generic', name, '-n', namespace, `--from-literal=k=${value}`]);
}

/** The value of one key of a Secret as kubectl returns it (base64 in .data). */
export async function secretValue(
  cluster: Cluster,
  namespace: string,
  name: string,
  key: string,
): Promise<string> {
  const json = JSON.parse(await cluster.kubectl(['get', 'secret', name, '-n', namespace, '-o', 'json'])) as {
    data?: Record<string, string>;
  };
  const value = json.data?.[key];
  if (value === undefined) throw new Error(`secret ${namespace}/${name} has no key ${key}`);
  return Buffer.from(value, 'base64').toString('utf8');
}

/** What an operator runs to rewrite every Secret under the current write provider. */
export async function rewriteAllSecrets(cluster: Cluster): Promise<void> {
  const all = await cluster.kubectl(['get', 'secrets', '-A', '-o', 'json']);
  await cluster.kubectl(['replace', '-f', '-'], all);
}
