// The admin API commands of a key's life: rotate (and --complete: re-seed, migrate, scan,
// retire), retire and restore a version, the usage scan of etcd, inspect one stored value,
// and migrate stored data to the current key_id. Each loads its module when it runs.
import type { Command } from 'commander';
import type { OutputOptions } from './admin-commands.ts';
import { adminCommand, CONFIG_DEFAULT, usageError } from './command-options.ts';
import { requiredConfigPath } from './config-path.ts';
import type { InspectOptions } from './inspect.ts';
import type { MigrateOptions } from './migrate.ts';
import { withMigrateOptions } from './migrate-options.ts';
import type { RotateCompleteOptions } from './rotate-complete.ts';
import {
  etcdFromConfig,
  USAGE_DESCRIPTION,
  withEtcdOptions,
  withUsageOptions,
  type UsageOptions,
} from './usage-options.ts';

const commands = () => import('./admin-commands.ts');

type RotateCliOptions = OutputOptions & RotateCompleteOptions & { offline?: boolean; complete?: boolean };

export function registerKeyCommands(program: Command): void {
  withEtcdOptions(
    withMigrateOptions(
      adminCommand(
        program,
        'rotate',
        'create a new key version and make it the write version (key_id changes)',
      ),
      { tuning: false },
    ),
  )
    .argument(
      '[backend]',
      'backend to rotate (default: the first in the failover order that is not an escrow key)',
    )
    .option(
      '--offline',
      `rotate in the backend and state file directly, without a running broker (reads the config ${CONFIG_DEFAULT})`,
    )
    .option(
      '--complete',
      'then wait for the re-seed, migrate, scan etcd, and retire the old version (the other flags are for this)',
    )
    .option('--yes', 'with --complete: retire without asking')
    .action(async (backend: string | undefined, options: RotateCliOptions, command: Command) => {
      const usage = usageError(command);
      if (options.complete === true) {
        if (options.offline === true) usage('error: --complete needs the running broker; drop --offline');
        process.exitCode = await (
          await import('./rotate-complete.ts')
        ).rotateCompleteCommand(backend, await etcdFromConfig(options, command), usage);
        return;
      }
      if (options.offline !== true) return (await commands()).rotateCommand(backend, options);
      return (await import('./rotate.ts')).offlineRotateCommand(requiredConfigPath(options.config), backend);
    });

  adminCommand(program, 'retire', 'retire a key version: it no longer unwraps (refused while still needed)')
    .argument('<backend>')
    .argument('<version>')
    .option('--force', 'retire even without a usage scan showing nothing needs it (audited)')
    .action(async (backend: string, version: string, options: OutputOptions & { force?: boolean }) =>
      (await commands()).versionStateCommand('retire', backend, version, options),
    );

  adminCommand(program, 'restore', 'undo a retirement')
    .argument('<backend>')
    .argument('<version>')
    .action(async (backend: string, version: string, options: OutputOptions) =>
      (await commands()).versionStateCommand('restore', backend, version, options),
    );

  withUsageOptions(adminCommand(program, 'usage', USAGE_DESCRIPTION)).action(
    async (options: UsageOptions, command: Command) => {
      process.exitCode = await (
        await import('./usage.ts')
      ).usageCommand(await etcdFromConfig(options, command));
    },
  );

  withEtcdOptions(
    adminCommand(
      program,
      'inspect',
      'explain one stored value: format, provider, key_id, the envelope and its wraps, and whether this broker could unwrap each now',
    ),
  )
    .argument('[-]', "'-': read the value from stdin")
    .option('--from-etcd <key>', 'read this etcd key (read-only); without a leading /, under --prefix')
    .option('--file <path>', 'read the value from a file (its raw bytes, as etcd stores them)')
    .addHelpText(
      'after',
      '\nNever prints plaintext, wrapped DEKs or seeds, or key material: names, versions and lengths only.\nThe admin API is optional: without it each wrap says unknown (no broker reached).\n',
    )
    .action(async (stdin: string | undefined, options: InspectOptions, command: Command) => {
      process.exitCode = await (
        await import('./inspect.ts')
      ).inspectCommand(stdin, await etcdFromConfig(options, command), usageError(command));
    });

  withMigrateOptions(
    adminCommand(
      program,
      'migrate',
      "re-encrypt stored data under the broker's current key_id (Kubernetes API)",
    ),
    { tuning: true },
  ).action(async (options: MigrateOptions, command: Command) => {
    process.exitCode = await (await import('./migrate.ts')).migrateCommand(options, usageError(command));
  });
}
