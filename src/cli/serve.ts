import { startApp } from '../app.ts';
import { loadConfigFile } from '../config/load.ts';
import { createLogger } from '../log.ts';

/** Runs until SIGTERM or SIGINT, then drains and exits. */
export async function serveCommand(configPath: string): Promise<void> {
  const config = loadConfigFile(configPath);
  const logger = createLogger(config.log.level);
  const app = await startApp(config, { logger });
  await new Promise<void>(resolve => {
    const stop = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'signal received');
      process.removeListener('SIGTERM', stop);
      process.removeListener('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  await app.shutdown();
  logger.flush();
}
