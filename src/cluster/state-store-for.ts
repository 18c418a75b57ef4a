// The state store a config asks for: the broker's own file, or, with `cluster`, the state
// shared in etcd with that file as its local copy.
import { hostname } from 'node:os';
import { fileStateStore } from '../broker/state/file-state-store.ts';
import type { StateStore } from '../broker/state/state-store.ts';
import { clusterEtcdFiles } from '../config/config-files.ts';
import type { BrokerConfig } from '../config/schema.ts';
import { createStoreClient } from '../etcd/store-client.ts';
import type { Logger } from '../log.ts';
import { VERSION } from '../version.ts';
import { etcdStateStore } from './etcd-state-store.ts';

/** This broker's name among its peers: `cluster.node`, or the host name. */
export function clusterNode(cluster: NonNullable<BrokerConfig['cluster']>): string {
  return cluster.node ?? hostname();
}

export function stateStoreFor(config: BrokerConfig, logger: Logger): StateStore {
  const local = fileStateStore(config.state.path);
  const { cluster, etcd } = config;
  if (cluster === undefined || etcd === undefined) return local;
  const tls = clusterEtcdFiles(config);
  return etcdStateStore({
    client: createStoreClient({ endpoints: etcd.endpoints, ...(tls === undefined ? {} : { tls }) }),
    endpoints: etcd.endpoints,
    name: cluster.name,
    node: clusterNode(cluster),
    prefix: cluster.prefix ?? `/kms-broker/${cluster.name}/`,
    leaseTtlMs: cluster.leaseTtlMs,
    promotionTimeoutMs: cluster.promotionTimeoutMs,
    convergenceWarnMs: cluster.convergenceWarnMs,
    version: VERSION,
    localCopy: local,
    logger: logger.child({ component: 'cluster' }),
  });
}
