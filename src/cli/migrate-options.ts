// The flags of `kms-broker migrate`, shared with `rotate --complete` (which runs the same
// migration): kept apart from the command so that registering it loads no Kubernetes client.
import { Option, type Command } from 'commander';

/** Defaults of the rewrite tuning, which `rotate --complete` does not offer as flags. */
export const REWRITE_DEFAULTS = { rate: '100', pageSize: '250' } as const;

/** `tuning`: also the rewrite rate, page size and --no-wait (migrate alone). */
export function withMigrateOptions(command: Command, { tuning }: { tuning: boolean }): Command {
  command
    .option('--kubeconfig <file>', 'default: $KUBECONFIG, /etc/kubernetes/admin.conf, ~/.kube/config')
    .option('--resources <list>', 'comma-separated resources, e.g. secrets,configmaps (default: secrets)')
    .option(
      '--encryption-config <file>',
      "the apiserver's EncryptionConfiguration: its resources written by kms",
    )
    .addOption(
      new Option('--mode <mode>', 'svm: StorageVersionMigration; rewrite: no-op updates; auto: svm if served')
        .choices(['auto', 'svm', 'rewrite'])
        .default('auto'),
    )
    .option(
      '--apiserver-urls <list>',
      "apiservers to check for the key_id (default: the kubeconfig's server)",
    )
    .option('--wait-timeout <s>', 'how long to wait for every apiserver to pick up the key_id', '150')
    .option('--migration-timeout <s>', 'svm: how long to follow one StorageVersionMigration', '1800')
    .option(
      '--state-file <file>',
      'where progress is kept (default: ~/.cache/kms-broker/migrate-state.json)',
    );
  if (!tuning) return command;
  return command
    .option(
      '--rate <objects/s>',
      'rewrite: at most this many objects per second (0: no limit)',
      REWRITE_DEFAULTS.rate,
    )
    .option('--page-size <n>', 'rewrite: objects per list page', REWRITE_DEFAULTS.pageSize)
    .option('--no-wait', 'do not wait for the apiservers to pick up the key_id');
}
