import { startApp } from '../app.ts';
import { loadConfigFile } from '../config/load.ts';
import { createLogger } from '../log.ts';

/** Runs until SIGTERM or SIGINT, then drains and exits. */
export async function serveCommand(configPath: string): Promise<void> {
  const { config, readFile } = loadConfigFile(configPath);
  const logger = createLogger(config.log.level);
  // Listen for signals before serving: a SIGTERM that lands while the broker starts must
  // still drain and remove the socket, not kill the process with the default action.
  const stopRequested = new Promise<NodeJS.Signals>(resolve => {
    const stop = (signal: NodeJS.Signals) => {
      process.removeListener('SIGTERM', stop);
      process.removeListener('SIGINT', stop);
      resolve(signal);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  const app = await startApp(config, { logger, readFile });
  logger.info({ signal: await stopRequested }, 'signal received');
  await app.shutdown();
  logger.flush();
}
