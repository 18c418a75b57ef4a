// A minimal real control plane for the end-to-end tests: etcd and kube-apiserver on loopback,
// a generated CA and serving certificate, a system:masters bearer token, and kubectl with a
// kubeconfig that trusts that CA. The apiserver can be restarted with another
// EncryptionConfiguration while etcd (and so every stored object) stays, and more apiservers
// can join the same etcd (an HA control plane); each apiserver is in kube-apiserver.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  apiserverOn,
  createCredentials,
  READY_TIMEOUT_MS,
  type Apiserver,
  type Credentials,
} from './kube-apiserver.ts';
import { startEtcd, type Etcd } from './kube-etcd.ts';
import { freePort, kubeBinary, startProcess, type KubeProcess } from './kube-process.ts';

export type { ApiResponse, Apiserver, ApiserverOptions } from './kube-apiserver.ts';

export interface Cluster extends Apiserver {
  readonly etcd: Etcd;
  /**
   * Another apiserver on the same etcd, CA, serving certificate, service-account keys and
   * token (an HA control plane), with its own port, kubeconfig and encryption config; not
   * started yet. cluster.stop() stops it too, before etcd.
   */
  addApiserver(): Promise<Apiserver>;
  /**
   * Starts kube-controller-manager with only the controllers StorageVersionMigrations need:
   * storage-version-migrator-controller and the garbage collector whose object graph it reads.
   * Resolves when the migrator has started; stopController stops it (by its PID).
   */
  startControllerManager(): Promise<KubeProcess>;
  stopControllerManager(): Promise<void>;
  /** Controller manager, apiservers (they ignore SIGTERM while etcd is gone), etcd, the files. */
  stop(): Promise<void>;
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
  const first = await apiserverOn(dir, etcd.url, credentials);
  const apiservers = [first];

  let controllerManager: KubeProcess | undefined;
  const stopControllerManager = async () => {
    await controllerManager?.stop(10_000);
    controllerManager = undefined;
  };

  return {
    ...first,
    etcd,
    async addApiserver() {
      const added = await apiserverOn(join(dir, `apiserver-${apiservers.length + 1}`), etcd.url, credentials);
      apiservers.push(added);
      return added;
    },
    async startControllerManager() {
      await stopControllerManager();
      const child = startProcess('kube-controller-manager', kubeBinary('kube-controller-manager'), [
        `--kubeconfig=${first.kubeconfig}`,
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
    async stop() {
      try {
        await stopControllerManager();
        await Promise.all(apiservers.map(apiserver => apiserver.stopApiserver()));
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
