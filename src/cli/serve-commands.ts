// The commands of the broker's own process and config file: serve, check-config, verify on the
// KMS socket, and the apiserver's EncryptionConfiguration. Each loads its module when it runs.
import { Option, type Command } from 'commander';
import { requiredConfigPath } from './config-path.ts';
import { usageError, withConfigOption, type WithConfig } from './command-options.ts';
import type { EncryptionConfigOptions } from './encryption-config.ts';

export interface ServeHooks {
  /** Called as `serve` begins: its failures may then end in the needs-operator exit code. */
  readonly onServe: () => void;
}

export function registerServeCommands(program: Command, { onServe }: ServeHooks): void {
  withConfigOption(
    program.command('serve').description('serve KMS v2 on the configured unix socket, and the admin API'),
    'YAML configuration file',
  ).action(async (options: { config?: string }) => {
    onServe();
    await (await import('./serve.ts')).serveCommand(requiredConfigPath(options.config));
  });

  withConfigOption(
    program
      .command('check-config')
      .description(
        'validate the config and the files it names, listing every problem; opens no backend (exit 0 valid, 4 not)',
      ),
    'YAML configuration file',
  )
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

  withConfigOption(
    program
      .command('encryption-config')
      .description("print kube-apiserver's EncryptionConfiguration for this broker (YAML)"),
    "the broker's config file: socket and call budget",
  )
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
    .action(async (options: WithConfig<EncryptionConfigOptions>, command: Command) => {
      const usage = usageError(command);
      (await import('./encryption-config.ts')).encryptionConfigCommand(
        { ...options, config: requiredConfigPath(options.config) },
        message => usage(`error: ${message}`),
      );
    });
}
