// What the command registrations (*-commands.ts) share: the usage exit code, the --config
// and admin API flags. Loaded at every start (`kms-broker --version` too), so it imports
// nothing but commander and the config path's names.
import type { Command } from 'commander';
import { CONFIG_ENV, DEFAULT_CONFIG_PATH } from './config-path.ts';
import { withOutputOptions } from './output.ts';

/** Bad flags or arguments: commander's own refusals, and the commands' checks of theirs. */
export const EXIT_USAGE = 2;

/** A command's refusal of its arguments: `message` on stderr with the help hint, exit 2. */
export function usageError(command: Command): (message: string) => never {
  return message => command.error(message, { exitCode: EXIT_USAGE });
}

/** How a command finds the config without --config, for its help. */
export const CONFIG_DEFAULT = `(default: env ${CONFIG_ENV}, else ${DEFAULT_CONFIG_PATH})`;

/** A command's options before the config path is resolved: --config may be absent. */
export type WithConfig<T extends { config: string }> = Omit<T, 'config'> & { config?: string };

/** `-c, --config` found as kubectl finds its kubeconfig; `what` says what the command reads in it. */
export function withConfigOption(command: Command, what: string): Command {
  return command.option('-c, --config <file>', `${what} ${CONFIG_DEFAULT}`);
}

/** The options every admin API command takes: where the API is, a token, and how to print. */
export function withAdminOptions(command: Command): Command {
  const admin = command
    .option('--admin <address>', 'admin API: http(s)://host:port or unix:///path (env KMS_BROKER_ADMIN)')
    .option('--token-file <file>', 'bearer token file (env KMS_BROKER_TOKEN_FILE or KMS_BROKER_TOKEN)');
  return withOutputOptions(
    withConfigOption(admin, "the broker's config file, to find the admin API and a token").option(
      '--ca-file <file>',
      'CA certificate of an https admin API',
    ),
  );
}

/** A command of `parent` over the admin API. */
export function adminCommand(parent: Command, name: string, description: string): Command {
  return withAdminOptions(parent.command(name).description(description));
}
