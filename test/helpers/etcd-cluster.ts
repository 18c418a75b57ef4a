// A real etcd cluster of several members on loopback, for the tests of clients that must
// survive a member going away: each member with its own data dir and ports, stoppable,
// killable and restartable one by one (by PID), and the whole cluster stoppable at once.
import { join } from 'node:path';
import type { EtcdTls } from './kube-etcd.ts';
import { spawnEtcdMember, waitHealthy, type EtcdMemberSpec } from './kube-etcd.ts';
import { freePort, type KubeProcess } from './kube-process.ts';

export interface EtcdClusterMember {
  readonly name: string;
  /** Its client URL. */
  readonly url: string;
  /** SIGTERM, then SIGKILL after 10 s. */
  stop(): Promise<void>;
  /** SIGKILL: a crash, its connections dropped without a goodbye. */
  kill(): Promise<void>;
  /** Starts it again on its data dir and ports; resolves once it is healthy. */
  start(): Promise<void>;
  /** Resolves once it has a leader again (after another member died, say); bounded. */
  healthy(): Promise<void>;
}

export interface EtcdCluster {
  /** Every member's client URL, member 0 first. */
  readonly endpoints: readonly string[];
  member(index: number): EtcdClusterMember;
  stop(): Promise<void>;
}

export async function startEtcdCluster(
  dir: string,
  options: { readonly members: number; readonly tls?: EtcdTls },
): Promise<EtcdCluster> {
  const scheme = options.tls === undefined ? 'http' : 'https';
  const specs: EtcdMemberSpec[] = [];
  for (let index = 0; index < options.members; index++)
    specs.push({
      name: `etcd-${index}`,
      dataDir: join(dir, `etcd-${index}`),
      clientUrl: `${scheme}://127.0.0.1:${await freePort()}`,
      peerUrl: `http://127.0.0.1:${await freePort()}`,
      initialCluster: '',
      tls: options.tls,
    });
  const initialCluster = specs.map(spec => `${spec.name}=${spec.peerUrl}`).join(',');
  const full = specs.map(spec => ({ ...spec, initialCluster }));
  const processes: KubeProcess[] = full.map(spawnEtcdMember);
  const stopAll = () => Promise.all(processes.map(child => child.stop(10_000)));
  try {
    // A member is healthy only once a quorum runs: all are started before any is waited for.
    await Promise.all(
      full.map((spec, index) =>
        waitHealthy(processes[index] as KubeProcess, spec.clientUrl, options.tls?.client),
      ),
    );
  } catch (error) {
    await stopAll();
    throw error;
  }
  const member = (index: number): EtcdClusterMember => {
    const spec = full[index];
    if (spec === undefined) throw new Error(`no member ${index} in a cluster of ${full.length}`);
    return {
      name: spec.name,
      url: spec.clientUrl,
      stop: () => (processes[index] as KubeProcess).stop(10_000),
      kill: () => (processes[index] as KubeProcess).kill(),
      healthy: () => waitHealthy(processes[index] as KubeProcess, spec.clientUrl, options.tls?.client),
      async start() {
        if (processes[index]?.running === true) return;
        // A restarted member keeps its identity from the data dir; the initial flags are ignored.
        const child = spawnEtcdMember(spec);
        processes[index] = child;
        await waitHealthy(child, spec.clientUrl, options.tls?.client);
      },
    };
  };
  return {
    endpoints: full.map(spec => spec.clientUrl),
    member,
    stop: async () => {
      await stopAll();
    },
  };
}
