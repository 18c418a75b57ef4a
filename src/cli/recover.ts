// `kms-broker recover`: rebuilds objects from an etcd snapshot when the cluster (or every
// online key) is gone: unwraps each seed with the escrow key (rebuilt from its shares) and/or
// the config's backends, decrypts as kube-apiserver would, and writes manifests into a folder
// only this user can enter. Needs no broker and no cluster. Exit codes: 0 every selected value
// written, 3 some could not be (listed), 1 bad input or a failure (thrown), 2 usage.
import { createLogger } from '../log.ts';
import { prepareOutput } from '../recovery/output-folder.ts';
import { runRecovery } from '../recovery/recover.ts';
import { openSources, SeedUnwrapper } from '../recovery/seed-sources.ts';
import { withSnapshotEtcd } from '../recovery/snapshot-etcd.ts';
import { createEtcdClient } from '../usage/etcd-client.ts';
import { progressView } from '../usage/progress.ts';
import { escrowOf, EXIT_UNRECOVERABLE, noTls } from './drill.ts';
import { checkedLocation } from './usage-options.ts';

export interface RecoverCliOptions {
  readonly config?: string;
  readonly snapshot: string;
  readonly out: string;
  readonly prefix: string;
  readonly resource?: string;
  readonly namespace?: string;
  readonly etcdBinDir?: string;
  readonly escrowPublicKey?: string;
  readonly share?: string[];
  readonly json?: boolean;
}

const RESOURCE_PATTERN = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;

export async function recoverCommand(
  options: RecoverCliOptions,
  usage: (message: string) => never,
): Promise<number> {
  const { prefix } = checkedLocation({
    etcdEndpoints: 'unused',
    etcdCacert: '',
    etcdCert: '',
    etcdKey: '',
    prefix: options.prefix,
  });
  for (const [flag, value] of [
    ['--resource', options.resource],
    ['--namespace', options.namespace],
  ] as const)
    if (value !== undefined && !RESOURCE_PATTERN.test(value))
      usage(`error: ${flag}: '${value}' is not a resource or namespace name`);
  const escrow = await escrowOf(options, usage);
  if (escrow === undefined && options.config === undefined)
    usage(
      'error: say what unwraps: --escrow-public-key with --share files, and/or --config (the broker config, its backends)',
    );
  // The folder is checked before anything is decrypted: nothing may be written to a wrong one.
  const out = prepareOutput(options.out);
  const logger = createLogger('silent');
  const sources = await openSources(options.config, escrow, logger);
  const unwrapper = new SeedUnwrapper(sources);
  try {
    const result = await withSnapshotEtcd(options.snapshot, options.etcdBinDir, async ({ endpoint }) => {
      const client = createEtcdClient({ endpoints: [endpoint], tls: noTls });
      const progress = progressView(process.stderr);
      try {
        return await runRecovery(client, unwrapper, {
          prefix,
          out,
          resource: options.resource,
          namespace: options.namespace,
          onProgress: update => progress.update(update),
        });
      } finally {
        progress.stop();
        client.close();
      }
    });
    const report = {
      out,
      revision: result.revision,
      files: result.files,
      written: result.written,
      notOurs: result.notOurs,
      failed: result.failed,
    };
    if (options.json === true) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      const kinds =
        Object.entries(result.written)
          .map(([kind, count]) => `${count} ${kind}`)
          .join(', ') || 'nothing';
      const lines = [
        `wrote ${result.files} files (0600) into ${out}: ${kinds}; revision ${result.revision}`,
        `${result.notOurs} selected values are not the broker's (unencrypted or another provider's) and were not written`,
        ...(result.failed.count === 0
          ? []
          : [
              `${result.failed.count} values could not be recovered:`,
              ...result.failed.values.map(({ key, reason }) => `  ${key}: ${reason}`),
            ]),
        ...(result.failed.count > result.failed.values.length
          ? [`  … and ${result.failed.count - result.failed.values.length} more`]
          : []),
        'apply them with kubectl apply -f <file> (Secrets, ConfigMaps, custom resources); .pb files hold other built-in objects as stored',
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    return result.failed.count === 0 ? 0 : EXIT_UNRECOVERABLE;
  } finally {
    unwrapper.clear();
    await sources.close();
    logger.flush();
  }
}
