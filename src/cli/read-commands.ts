// The admin API commands that show the broker (status, backends, keys) and read or change the
// failover order. They load the admin client only when they run: `kms-broker status` answers
// fast from a script.
import { Option, type Command } from 'commander';
import type { OutputOptions, ReadOptions } from './admin-commands.ts';
import { adminCommand, usageError, withAdminOptions } from './command-options.ts';
import { withWatchOptions } from './watch-options.ts';

const commands = () => import('./admin-commands.ts');

/** status, backends and keys: the read commands that can be watched. */
export function registerReadCommands(program: Command): void {
  withWatchOptions(
    adminCommand(
      program,
      'status',
      'key_id, health, write versions and failover; exit 1 unhealthy, 5 degraded (a backend down, thin seeds)',
    ),
  )
    .option(
      '--cluster',
      'every broker sharing the state: the key_id each advertises, what it unwraps, when last seen; exit 5 while they disagree or etcd is unreachable',
    )
    .action(async (options: ReadOptions & { cluster?: boolean }, command: Command) => {
      if (options.cluster === true && options.watch === true)
        usageError(command)('error: --watch follows status, backends and keys, not --cluster');
      process.exitCode =
        options.cluster === true
          ? await (await import('./cluster-status.ts')).clusterStatusCommand(options)
          : await (await commands()).statusCommand(options);
    });
  withWatchOptions(adminCommand(program, 'backends', 'health, breaker state and errors per backend')).action(
    async (options: ReadOptions) => (await commands()).backendsCommand(options),
  );
  withWatchOptions(adminCommand(program, 'keys', 'key versions per backend, with role and usage')).action(
    async (options: ReadOptions) => (await commands()).keysCommand(options),
  );
}

/** `failover` (get by default) and `failover set`. */
export function registerFailoverCommands(program: Command): void {
  const failover = program.command('failover').description('read or change the failover order');
  withAdminOptions(
    failover.command('get', { isDefault: true }).description('print the failover setting'),
  ).action(async (options: OutputOptions) => (await commands()).failoverGetCommand(options));
  withAdminOptions(
    failover
      .command('set')
      .description('set the order (comma-separated backend names) and optionally the wrap mode')
      .argument('<order>', 'e.g. hsm,vault')
      .addOption(
        new Option('--wrap <mode>', 'all: every backend wraps; first: the first healthy one').choices([
          'all',
          'first',
        ]),
      ),
  ).action(async (order: string, options: OutputOptions & { wrap?: string }) =>
    (await commands()).failoverSetCommand(order, options),
  );
}
