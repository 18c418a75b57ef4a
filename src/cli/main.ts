#!/usr/bin/env node
// The kms-broker command line: serve and verify on the KMS socket, encryption-config from the
// config file; everything else over the admin API. Exit codes: 0 done, 1 refused or failed,
// 2 usage, 3 broker unreachable (drill, recover: some value is not recoverable; hsm-probe: no mechanism works), 4 (serve) no
// restart can mend it, 5 (status) serving but degraded, 6 (migrate, rotate --complete) the
// apiservers have not picked up the key_id yet.
import { Command, CommanderError, Option } from 'commander';
import { atStartOf, toBrokerError, type BrokerError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { UnreachableError } from './unreachable.ts';
import type { OutputOptions, ReadOptions } from './admin-commands.ts';
import { CONFIG_ENV, DEFAULT_CONFIG_PATH, requiredConfigPath } from './config-path.ts';
import { withOutputOptions } from './output.ts';
import { withWatchOptions } from './watch-options.ts';
import type { EncryptionConfigOptions } from './encryption-config.ts';
import type { EscrowInitOptions, VerifySharesOptions } from './escrow.ts';
import {
  etcdFromConfig,
  USAGE_DESCRIPTION,
  withEtcdOptions,
  withUsageOptions,
  type UsageOptions,
} from './usage-options.ts';
import type { RotateCompleteOptions } from './rotate-complete.ts';
import type { MigrateOptions } from './migrate.ts';
import type { InspectOptions } from './inspect.ts';
import type { DrillCliOptions } from './drill.ts';
import type { RecoverCliOptions } from './recover.ts';
import type { HsmProbeOptions } from './hsm-probe.ts';
import { withMigrateOptions } from './migrate-options.ts';

// Commands load their modules when they run: `kms-broker keys` need not load the HSM,
// Vault and gRPC stacks that `serve` needs, so scripts get answers fast.
const commands = () => import('./admin-commands.ts');

const EXIT_USAGE = 2;
const EXIT_UNREACHABLE = 3;
/**
 * `serve` failed for a reason no restart can mend: a supervisor should stop restarting
 * (systemd: RestartPreventExitStatus=4). A wrong PIN retried on every restart can lock an
 * HSM token for good; a corrupt state file or a bad config only fill the logs. Which errors
 * those are, the error catalog says (`atStart: 'needs-operator'`, src/errors.ts).
 */
const EXIT_NEEDS_OPERATOR = 4;

function exitCodeOf(error: BrokerError): number {
  return serving && atStartOf(error) === 'needs-operator' ? EXIT_NEEDS_OPERATOR : 1;
}

// A reader that stops early (`kms-broker verify | head -c1`) wants no more output; it is no
// failure of the command, whose exit code stays its own. Other write errors still throw.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
});

const program = new Command()
  .name('kms-broker')
  .description('Kubernetes KMS v2 plugin fronting HSMs, Vault/OpenBao Transit and cloud KMSes')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

/** The options every admin API command takes. */
function withAdminOptions(command: Command): Command {
  return command
    .option('--admin <address>', 'admin API: http(s)://host:port or unix:///path (env KMS_BROKER_ADMIN)')
    .option('--token-file <file>', 'bearer token file (env KMS_BROKER_TOKEN_FILE or KMS_BROKER_TOKEN)')
    .option(
      '-c, --config <file>',
      `the broker's config file, to find the admin API and a token ${CONFIG_DEFAULT}`,
    )
    .option('--ca-file <file>', 'CA certificate of an https admin API');
}

/** A command's options before the config path is resolved: --config may be absent. */
type WithConfig<T extends { config: string }> = Omit<T, 'config'> & { config?: string };

/** How a command finds the config without --config, for its help. */
const CONFIG_DEFAULT = `(default: env ${CONFIG_ENV}, else ${DEFAULT_CONFIG_PATH})`;

function adminCommand(name: string, description: string): Command {
  return withOutputOptions(withAdminOptions(program.command(name).description(description)));
}

program
  .command('serve')
  .description('serve KMS v2 on the configured unix socket, and the admin API')
  .option('-c, --config <file>', `YAML configuration file ${CONFIG_DEFAULT}`)
  .action(async (options: { config?: string }) => {
    serving = true;
    await (await import('./serve.ts')).serveCommand(requiredConfigPath(options.config));
  });

program
  .command('check-config')
  .description(
    'validate the config and the files it names, listing every problem; opens no backend (exit 0 valid, 4 not)',
  )
  .option('-c, --config <file>', `YAML configuration file ${CONFIG_DEFAULT}`)
  .option('--json', 'print the result as JSON for scripts')
  .action(async (options: { config?: string; json?: boolean }) => {
    process.exitCode = (await import('./check-config.ts')).checkConfigCommand(options);
  });

program
  .command('verify')
  .description('Status, Encrypt 32 random bytes, Decrypt, compare: exit 0 only when all hold')
  .requiredOption('-s, --socket <path>', 'the broker socket')
  .option('--timeout <ms>', 'per-call timeout', '3000')
  .action(async (options: { socket: string; timeout: string }) => {
    process.exitCode = await (
      await import('./verify.ts')
    ).verifyCommand(options.socket, Number(options.timeout));
  });

program
  .command('encryption-config')
  .description("print kube-apiserver's EncryptionConfiguration for this broker (YAML)")
  .option('-c, --config <file>', `the broker's config file: socket and call budget ${CONFIG_DEFAULT}`)
  .option('--name <name>', 'provider name; never change it once data is written under it', 'kms-broker')
  .addOption(
    new Option('--kms-api <version>', 'KMS API the provider speaks').choices(['v2', 'v1']).default('v2'),
  )
  .option('--cachesize <entries>', 'KMS v1 only: DEKs the apiserver caches (default 1000; negative: none)')
  .option('--resource <resource...>', 'encrypt this too, besides secrets (repeatable): configmaps, *.apps')
  .option('--identity-fallback', 'append identity: {} so data stored before encryption still reads')
  .addHelpText(
    'after',
    '\nThe name is part of every value stored in etcd (k8s:enc:kms:v2:<name>:): data written under one\nname reads only through a provider of that name. Keep it, and keep it equal on every node.\n',
  )
  .action(async (options: WithConfig<EncryptionConfigOptions>, command: Command) =>
    (await import('./encryption-config.ts')).encryptionConfigCommand(
      { ...options, config: requiredConfigPath(options.config) },
      message => command.error(`error: ${message}`, { exitCode: EXIT_USAGE }),
    ),
  );

withWatchOptions(
  adminCommand(
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
      command.error('error: --watch follows status, backends and keys, not --cluster', {
        exitCode: EXIT_USAGE,
      });
    process.exitCode =
      options.cluster === true
        ? await (await import('./cluster-status.ts')).clusterStatusCommand(options)
        : await (await commands()).statusCommand(options);
  });
withWatchOptions(adminCommand('backends', 'health, breaker state and errors per backend')).action(
  async (options: ReadOptions) => (await commands()).backendsCommand(options),
);
withWatchOptions(adminCommand('keys', 'key versions per backend, with role and usage')).action(
  async (options: ReadOptions) => (await commands()).keysCommand(options),
);

withEtcdOptions(
  withMigrateOptions(
    adminCommand('rotate', 'create a new key version and make it the write version (key_id changes)'),
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
  .action(
    async (
      backend: string | undefined,
      options: OutputOptions & RotateCompleteOptions & { offline?: boolean; complete?: boolean },
      command: Command,
    ) => {
      const usage = (message: string) => command.error(message, { exitCode: EXIT_USAGE });
      if (options.complete === true) {
        if (options.offline === true)
          return usage('error: --complete needs the running broker; drop --offline');
        process.exitCode = await (
          await import('./rotate-complete.ts')
        ).rotateCompleteCommand(backend, await etcdFromConfig(options, command), usage);
        return;
      }
      if (options.offline !== true) return (await commands()).rotateCommand(backend, options);
      return (await import('./rotate.ts')).offlineRotateCommand(requiredConfigPath(options.config), backend);
    },
  );

adminCommand('retire', 'retire a key version: it no longer unwraps (refused while still needed)')
  .argument('<backend>')
  .argument('<version>')
  .option('--force', 'retire even without a usage scan showing nothing needs it (audited)')
  .action(async (backend: string, version: string, options: OutputOptions & { force?: boolean }) =>
    (await commands()).versionStateCommand('retire', backend, version, options),
  );

adminCommand('restore', 'undo a retirement')
  .argument('<backend>')
  .argument('<version>')
  .action(async (backend: string, version: string, options: OutputOptions) =>
    (await commands()).versionStateCommand('restore', backend, version, options),
  );

withUsageOptions(adminCommand('usage', USAGE_DESCRIPTION)).action(
  async (options: UsageOptions, command: Command) => {
    process.exitCode = await (
      await import('./usage.ts')
    ).usageCommand(await etcdFromConfig(options, command));
  },
);
withEtcdOptions(
  adminCommand(
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
    ).inspectCommand(stdin, await etcdFromConfig(options, command), message =>
      command.error(message, { exitCode: EXIT_USAGE }),
    );
  });
withMigrateOptions(
  adminCommand('migrate', "re-encrypt stored data under the broker's current key_id (Kubernetes API)"),
  { tuning: true },
).action(async (options: MigrateOptions, command: Command) => {
  process.exitCode = await (
    await import('./migrate.ts')
  ).migrateCommand(options, message => command.error(message, { exitCode: EXIT_USAGE }));
});

const failover = program.command('failover').description('read or change the failover order');
withOutputOptions(
  withAdminOptions(failover.command('get', { isDefault: true }).description('print the failover setting')),
).action(async (options: OutputOptions) => (await commands()).failoverGetCommand(options));
withOutputOptions(
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
  ),
).action(async (order: string, options: OutputOptions & { wrap?: string }) =>
  (await commands()).failoverSetCommand(order, options),
);

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
  .option('--json', 'print JSON for scripts')
  .action(async (options: EscrowInitOptions, command: Command) =>
    (await import('./escrow.ts')).escrowInitCommand(options, message =>
      command.error(message, { exitCode: EXIT_USAGE }),
    ),
  );
escrow
  .command('verify-shares')
  .description('check that the shares rebuild the private key of the public key file; nothing is unwrapped')
  .requiredOption('--public-key <file>', 'the escrow-public.pem that `escrow init` wrote')
  .argument('<share-file...>', 'at least the threshold of share files')
  .option('--json', 'print JSON for scripts')
  .action(async (files: string[], options: VerifySharesOptions) =>
    (await import('./escrow.ts')).escrowVerifySharesCommand(files, options),
  );

/** The flags `drill` and `recover` share: the snapshot and how to read it, the escrow. */
function withRecoveryOptions(command: Command): Command {
  return command
    .option(
      '--etcd-bin-dir <dir>',
      'the folder of etcdutl and etcd to restore and serve --snapshot (default: PATH)',
    )
    .option('--escrow-public-key <pem>', 'also unwrap with the escrow key: its escrow-public.pem')
    .option('--share <file...>', 'the escrow shares (at least the threshold), with --escrow-public-key')
    .option('--json', 'print JSON for scripts');
}

program
  .command('hsm-probe')
  .description(
    'what a PKCS#11 token offers, which mechanisms round-trip on it (temporary session keys), and the backend block to use; exit 3 when none works',
  )
  .requiredOption('--module <path>', "the token's PKCS#11 library")
  .option('--token <label>', 'the token by label')
  .option('--token-serial <serial>', 'the token by serial number')
  .option('--slot-id <n>', 'the token by slot id')
  .option('--pin-file <file>', 'read the user PIN from this file')
  .option('--pin-env <VAR>', 'read the user PIN from this environment variable')
  .option('--key-label <label>', 'keyLabel in the recommended block', 'kms-broker-kek')
  .option('--name <name>', 'the backend name in the recommended block', 'hsm')
  .option('--all', 'list every mechanism the token offers, not only those the broker uses')
  .option('--json', 'print one JSON object for scripts')
  .addHelpText(
    'after',
    '\nLogs in once (a wrong PIN is never retried); creates only session objects and destroys them.\nExit codes: 0 some mechanism round-trips, 3 none does, 1 a failure (wrong PIN, no such token), 2 usage.\n',
  )
  .action(async (options: HsmProbeOptions, command: Command) => {
    process.exitCode = await (
      await import('./hsm-probe.ts')
    ).hsmProbeCommand(options, message => command.error(message, { exitCode: EXIT_USAGE }));
  });

withRecoveryOptions(
  withEtcdOptions(
    program
      .command('drill')
      .description(
        'prove an etcd snapshot (or the live etcd) readable: per backend alone and with the escrow, what each value needs; exit 3 when some value is not recoverable',
      ),
  ),
)
  .option(
    '-c, --config <file>',
    `the broker's config file: its backends are opened (never written to) ${CONFIG_DEFAULT}`,
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
      message => command.error(message, { exitCode: EXIT_USAGE }),
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
  .option(
    '-c, --config <file>',
    "the broker's config file: unwrap with its backends (with or instead of the escrow)",
  )
  .option('--prefix <prefix>', "the apiserver's etcd prefix (--etcd-prefix) with a trailing /", '/registry/')
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
    process.exitCode = await (
      await import('./recover.ts')
    ).recoverCommand(options, message => command.error(message, { exitCode: EXIT_USAGE }));
  });

/** Set when `serve` runs: its failures may end in EXIT_NEEDS_OPERATOR. */
let serving = false;

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof CommanderError) {
    // Help and --version end here too, with exit code 0.
    process.exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
  } else if (error instanceof UnreachableError) {
    process.stderr.write(`kms-broker: ${error.message}\n`);
    process.exitCode = EXIT_UNREACHABLE;
  } else {
    const brokerError = toBrokerError(error);
    process.stderr.write(`kms-broker: ${brokerError.code}: ${brokerError.message}\n`);
    process.exitCode = exitCodeOf(brokerError);
  }
}
