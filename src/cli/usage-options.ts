// The flags of `kms-broker usage`, kept apart from the command so that registering it loads
// neither gRPC nor the scanner. Defaults are where kubeadm puts etcd and its client files.
import type { Command } from 'commander';
import { KUBEADM_ETCD_FILES } from '../config/kubeadm-files.ts';
import { BrokerError } from '../errors.ts';
import type { EtcdTlsFiles } from '../etcd/tls.ts';
import type { OutputOptions } from './admin-commands.ts';
import { optionalConfigPath } from './config-path.ts';

/** Where etcd is and how to reach it. */
export interface EtcdLocation {
  readonly etcdEndpoints: string;
  readonly etcdCacert: string;
  readonly etcdCert: string;
  readonly etcdKey: string;
  readonly prefix: string;
}

/** Where etcd is, and the scan's pace. */
export interface EtcdOptions extends EtcdLocation {
  readonly rate: string;
  readonly pageSize: string;
}

export interface UsageOptions extends OutputOptions, EtcdOptions {
  /** False with --no-record. */
  readonly record: boolean;
}

export const USAGE_DESCRIPTION =
  'read-only scan of etcd: which key versions stored data needs; recorded in the broker (exit 3: scanned, not recorded)';

/** Where etcd is and how to reach it: `usage`, and the scan of `rotate --complete`. */
export function withEtcdOptions(command: Command): Command {
  return command
    .option('--etcd-endpoints <urls>', 'etcd client URLs, comma-separated', 'https://127.0.0.1:2379')
    .option('--etcd-cacert <file>', "CA of etcd's serving certificate", KUBEADM_ETCD_FILES.caFile)
    .option('--etcd-cert <file>', 'client certificate etcd trusts', KUBEADM_ETCD_FILES.certFile)
    .option('--etcd-key <file>', 'its private key', KUBEADM_ETCD_FILES.keyFile)
    .option(
      '--prefix <prefix>',
      "the apiserver's etcd prefix (--etcd-prefix) with a trailing /",
      '/registry/',
    );
}

const MAX_PREFIX_LENGTH = 256;

/** Where etcd is, checked: what every reader of the apiserver's etcd (usage, inspect) needs. */
export interface CheckedLocation {
  readonly endpoints: string[];
  readonly prefix: string;
  readonly tls: EtcdTlsFiles;
}

export function checkedLocation(options: EtcdLocation): CheckedLocation {
  const endpoints = options.etcdEndpoints
    .split(',')
    .map(endpoint => endpoint.trim())
    .filter(endpoint => endpoint !== '');
  if (endpoints.length === 0)
    throw new BrokerError('INVALID_REQUEST', '--etcd-endpoints: name at least one etcd client URL');
  const prefix = options.prefix;
  if (!prefix.startsWith('/') || !prefix.endsWith('/') || prefix.length > MAX_PREFIX_LENGTH)
    throw new BrokerError(
      'INVALID_REQUEST',
      `--prefix: '${prefix}' must start and end with / and be at most ${MAX_PREFIX_LENGTH} characters (the apiserver's default is /registry/)`,
    );
  return {
    endpoints,
    prefix,
    tls: { caFile: options.etcdCacert, certFile: options.etcdCert, keyFile: options.etcdKey },
  };
}

/** Defaults of the scan's pace, which `rotate --complete` does not offer as flags. */
export const SCAN_DEFAULTS = { rate: '2000', pageSize: '500' } as const;

export function withUsageOptions(command: Command): Command {
  return withEtcdOptions(command)
    .option('--rate <values>', 'values read per second at most', SCAN_DEFAULTS.rate)
    .option('--page-size <values>', 'values per etcd read', SCAN_DEFAULTS.pageSize)
    .option('--no-record', 'print the report only; do not record it in the broker')
    .addHelpText(
      'after',
      '\nNever writes to etcd and never decrypts: it reads how each value is stored. Without TLS files for\nhttp:// endpoints. The result is recorded with POST /v1/usage/scans (admin token); retirement\nof a key version is judged against the latest recorded scan.\n',
    );
}

/**
 * The options with every etcd setting the flags left at its default taken from the broker
 * config's `etcd` section, when there is a config (--config, KMS_BROKER_CONFIG, or the default
 * where it exists): flags, then the config, then kubeadm's paths.
 */
export async function etcdFromConfig<T extends EtcdLocation & { readonly config?: string | undefined }>(
  options: T,
  command: Command,
): Promise<T> {
  const path = optionalConfigPath(options.config);
  const etcd = path === undefined ? undefined : (await import('../config/load.ts')).readConfigFile(path).etcd;
  if (etcd === undefined) return options;
  const fromConfig: Record<keyof EtcdLocation, string | undefined> = {
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
