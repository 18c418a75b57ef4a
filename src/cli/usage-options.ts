// The flags of `kms-broker usage`, kept apart from the command so that registering it loads
// neither gRPC nor the scanner. Defaults are where kubeadm puts etcd and its client files.
import type { Command } from 'commander';
import { readConfigFile } from '../config/load.ts';
import type { OutputOptions } from './admin-commands.ts';

export interface UsageOptions extends OutputOptions {
  readonly etcdEndpoints: string;
  readonly etcdCacert: string;
  readonly etcdCert: string;
  readonly etcdKey: string;
  readonly prefix: string;
  readonly rate: string;
  readonly pageSize: string;
  /** False with --no-record. */
  readonly record: boolean;
}

export const USAGE_DESCRIPTION =
  'read-only scan of etcd: which key versions stored data needs; recorded in the broker (exit 3: scanned, not recorded)';

export function withUsageOptions(command: Command): Command {
  return command
    .option('--etcd-endpoints <urls>', 'etcd client URLs, comma-separated', 'https://127.0.0.1:2379')
    .option('--etcd-cacert <file>', "CA of etcd's serving certificate", '/etc/kubernetes/pki/etcd/ca.crt')
    .option(
      '--etcd-cert <file>',
      'client certificate etcd trusts',
      '/etc/kubernetes/pki/apiserver-etcd-client.crt',
    )
    .option('--etcd-key <file>', 'its private key', '/etc/kubernetes/pki/apiserver-etcd-client.key')
    .option(
      '--prefix <prefix>',
      "the apiserver's etcd prefix (--etcd-prefix) with a trailing /",
      '/registry/',
    )
    .option('--rate <values>', 'values read per second at most', '2000')
    .option('--page-size <values>', 'values per etcd read', '500')
    .option('--no-record', 'print the report only; do not record it in the broker')
    .addHelpText(
      'after',
      '\nNever writes to etcd and never decrypts: it reads how each value is stored. Without TLS files for\nhttp:// endpoints. The result is recorded with POST /v1/usage/scans (admin token); retirement\nof a key version is judged against the latest recorded scan.\n',
    );
}

/**
 * The options with every etcd setting the flags left at its default taken from the broker
 * config's `etcd` section, when --config names one: flags, then the config, then kubeadm's paths.
 */
export function etcdFromConfig<T extends UsageOptions>(options: T, command: Command): T {
  const etcd = options.config === undefined ? undefined : readConfigFile(options.config).etcd;
  if (etcd === undefined) return options;
  const fromConfig: Partial<Record<keyof UsageOptions, string | undefined>> = {
    etcdEndpoints: etcd.endpoints.join(','),
    etcdCacert: etcd.caFile,
    etcdCert: etcd.certFile,
    etcdKey: etcd.keyFile,
    prefix: etcd.prefix,
  };
  const merged = { ...options };
  for (const [key, value] of Object.entries(fromConfig)) {
    if (value !== undefined && command.getOptionValueSource(key) === 'default')
      Object.assign(merged, { [key]: value });
  }
  return merged;
}
