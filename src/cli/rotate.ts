import { startBroker } from '../app.ts';
import { clusterNode } from '../cluster/state-store-for.ts';
import { writeOnlyBackends } from '../backends/kinds.ts';
import { loadConfigFile } from '../config/load.ts';
import { createLogger } from '../log.ts';

/**
 * Offline rotation (`rotate --offline`) against the configured backend and state file (or the
 * shared state, promoted like any rotation), for when no broker serves the admin API. A broker
 * serving the same state still notices the change within seconds and switches key_id without
 * a restart.
 */
export async function offlineRotateCommand(configPath: string, backendName?: string): Promise<void> {
  const loaded = loadConfigFile(configPath);
  const { readFile } = loaded;
  // With a shared state, this process joins the cluster for the rotation under a name of its
  // own: registering as the node's broker would replace that broker's record, and leaving
  // would remove it until its next heartbeat.
  const { cluster } = loaded.config;
  const config =
    cluster === undefined
      ? loaded.config
      : { ...loaded.config, cluster: { ...cluster, node: `${clusterNode(cluster)}.offline-rotate` } };
  const logger = createLogger('warn');
  const broker = await startBroker(config, { logger, readFile });
  try {
    // As online: the first of the order with keys of its own, never an escrow key.
    const writeOnly = writeOnlyBackends(config.backends);
    const backend = backendName ?? config.failover.order.find(name => !writeOnly.has(name)) ?? '';
    const result = await broker.admin.rotate(backend);
    process.stdout.write(`${JSON.stringify({ backend, version: result.version, keyId: result.keyId })}\n`);
  } finally {
    await broker.close();
    logger.flush();
  }
}
