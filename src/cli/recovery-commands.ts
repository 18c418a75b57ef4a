// The disaster recovery commands, none of which needs a running broker: the offline escrow key
// (make and split it, check its shares), the drill that proves a snapshot readable, and the
// recovery of a snapshot's objects. Each loads its module when it runs.
import type { Command } from 'commander';
import { usageError, withConfigOption, type WithConfig } from './command-options.ts';
import { requiredConfigPath } from './config-path.ts';
import type { DrillCliOptions } from './drill.ts';
import type { EscrowInitOptions, VerifySharesOptions } from './escrow.ts';
import type { RecoverCliOptions } from './recover.ts';
import { etcdFromConfig, withEtcdOptions } from './usage-options.ts';

const JSON_HELP = 'print JSON for scripts';

/** `escrow init` and `escrow verify-shares`. */
export function registerEscrowCommands(program: Command): void {
  const escrow = program
    .command('escrow')
    .description('the offline escrow key for disaster recovery: make it and split it, check its shares');
  escrow
    .command('init')
    .description(
      'offline: make the escrow key pair, write its public key and its private key as N Shamir shares',
    )
    .requiredOption('--out <dir>', 'a new folder (made 0700), or an empty one no other user can write to')
    .requiredOption('--shares <N>', 'how many shares to write, one per holder (2 to 255)')
    .requiredOption('--threshold <M>', 'how many shares rebuild the key (2 to N); fewer reveal nothing')
    .option('--json', JSON_HELP)
    .action(async (options: EscrowInitOptions, command: Command) =>
      (await import('./escrow.ts')).escrowInitCommand(options, usageError(command)),
    );
  escrow
    .command('verify-shares')
    .description('check that the shares rebuild the private key of the public key file; nothing is unwrapped')
    .requiredOption('--public-key <file>', 'the escrow-public.pem that `escrow init` wrote')
    .argument('<share-file...>', 'at least the threshold of share files')
    .option('--json', JSON_HELP)
    .action(async (files: string[], options: VerifySharesOptions) =>
      (await import('./escrow.ts')).escrowVerifySharesCommand(files, options),
    );
}

/** The flags `drill` and `recover` share: the snapshot and how to read it, the escrow. */
function withRecoveryOptions(command: Command): Command {
  return command
    .option(
      '--etcd-bin-dir <dir>',
      'the folder of etcdutl and etcd to restore and serve --snapshot (default: PATH)',
    )
    .option('--escrow-public-key <pem>', 'also unwrap with the escrow key: its escrow-public.pem')
    .option('--share <file...>', 'the escrow shares (at least the threshold), with --escrow-public-key')
    .option('--json', JSON_HELP);
}

/** `drill` and `recover`. */
export function registerRecoveryCommands(program: Command): void {
  withConfigOption(
    withRecoveryOptions(
      withEtcdOptions(
        program
          .command('drill')
          .description(
            'prove an etcd snapshot (or the live etcd) readable: per backend alone and with the escrow, what each value needs; exit 3 when some value is not recoverable',
          ),
      ),
    ),
    "the broker's config file: its backends are opened (never written to)",
  )
    .option(
      '--snapshot <file>',
      'an etcd snapshot (etcdctl snapshot save); without it the live etcd is read (read-only)',
    )
    .option('--full', 'decrypt every value, not only a sample')
    .option('--sample <n>', 'values to decrypt besides the first of every seed', '20')
    .option('--state <file>', 'record progress here (0600) and resume from it after an interruption')
    .addHelpText(
      'after',
      '\nNever starts the broker, never writes to etcd or a backend, never prints a seed or a plaintext.\nExit codes: 0 every value recoverable, 3 some value is not, 1 bad input or a failure, 2 usage.\n',
    )
    .action(async (options: WithConfig<DrillCliOptions>, command: Command) => {
      process.exitCode = await (
        await import('./drill.ts')
      ).drillCommand(
        await etcdFromConfig({ ...options, config: requiredConfigPath(options.config) }, command),
        usageError(command),
      );
    });

  withRecoveryOptions(
    program
      .command('recover')
      .description(
        'decrypt the values of an etcd snapshot into manifests (Secrets, ConfigMaps as YAML) in a private folder; no broker, no cluster needed',
      ),
  )
    .requiredOption('--snapshot <file>', 'the etcd snapshot (etcdctl snapshot save)')
    .requiredOption('--out <dir>', 'a new folder (made 0700), or an empty one only you can enter')
    // No default file: the config is optional here, the escrow may do alone.
    .option(
      '-c, --config <file>',
      "the broker's config file: unwrap with its backends (with or instead of the escrow)",
    )
    .option(
      '--prefix <prefix>',
      "the apiserver's etcd prefix (--etcd-prefix) with a trailing /",
      '/registry/',
    )
    .option(
      '--resource <resource>',
      'only this resource, as etcd names it: secrets, configmaps, <resource>.<group>',
    )
    .option('--namespace <namespace>', 'only this namespace')
    .addHelpText(
      'after',
      '\nWrites each object once, 0600, never over an existing file: <out>/<resource>/<namespace>/<name>.yaml\n(Secrets, ConfigMaps, custom resources), or .pb (other built-in types, their stored protobuf).\nExit codes: 0 every selected value written, 3 some could not be, 1 bad input or a failure, 2 usage.\n',
    )
    .action(async (options: RecoverCliOptions, command: Command) => {
      process.exitCode = await (await import('./recover.ts')).recoverCommand(options, usageError(command));
    });
}
