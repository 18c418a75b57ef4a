import { startBroker } from '../app.ts';
import { loadConfigFile } from '../config/load.ts';
import { createLogger } from '../log.ts';

/**
 * Offline rotation (`rotate --offline`) against the configured backend and state file, for
 * when no broker serves the admin API. A broker serving the same state file still notices
 * the change within seconds and switches key_id without a restart.
 */
export async function offlineRotateCommand(configPath: string, backendName?: string): Promise<void> {
  const { config, readFile } = loadConfigFile(configPath);
  const logger = createLogger('warn');
  const broker = await startBroker(config, { logger, readFile });
  try {
    const result = await broker.admin.rotate(backendName ?? (config.failover.order[0] as string));
    process.stdout.write(
      `${JSON.stringify({ backend: backendName ?? config.failover.order[0], version: result.version, keyId: result.keyId })}\n`,
    );
  } finally {
    await broker.close();
    logger.flush();
  }
}
