import { startApp } from '../app.ts';
import { exposedSecretFiles } from '../config/config-files.ts';
import { loadConfigFile } from '../config/load.ts';
import { createLogger } from '../log.ts';
import { releaseStartupMemory } from '../startup-memory.ts';

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
  // SIGHUP's default action kills at once: no drain, sockets left behind. Nothing waits for
  // it to be reloaded (the state file is watched; PINs are read again at each HSM login), and
  // a changed config needs a restart. A terminal that closes sends it too: the broker stays.
  process.on('SIGHUP', () =>
    logger.warn(
      { signal: 'SIGHUP' },
      'signal ignored; restart the broker to apply a changed config or admin token',
    ),
  );
  for (const file of exposedSecretFiles(config)) {
    logger.warn(
      { key: file.key, path: file.path, mode: file.mode },
      'secret file is readable by every user of this host; chmod o-rwx it',
    );
  }
  const app = await startApp(config, { logger, readFile });
  // Serving from here on: what only start-up needed goes back (about 10 MB idle RSS).
  logger.debug({ pauseMs: releaseStartupMemory() ?? null }, 'start-up memory released');
  logger.info({ signal: await stopRequested }, 'signal received');
  await app.shutdown();
  logger.flush();
}
