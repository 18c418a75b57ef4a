// Which config file a command reads when `--config` is not given: the one KMS_BROKER_CONFIG
// names, else the packaged default, as kubectl falls back to KUBECONFIG and ~/.kube/config.
// No heavy imports: every command asks this before it loads anything else.
import { existsSync } from 'node:fs';
import { BrokerError } from '../errors.ts';

export const DEFAULT_CONFIG_PATH = '/etc/kms-broker/config.yaml';
export const CONFIG_ENV = 'KMS_BROKER_CONFIG';

/** Where a config path came from: named on purpose (flag, environment) or the default. */
interface ConfigChoice {
  readonly path: string;
  readonly explicit: boolean;
}

/** The path a command would read: the flag, then KMS_BROKER_CONFIG, then the default. */
export function chosenConfigPath(flag: string | undefined): string {
  return choose(flag).path;
}

function choose(flag: string | undefined): ConfigChoice {
  if (flag !== undefined) return { path: flag, explicit: true };
  const fromEnv = process.env[CONFIG_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return { path: fromEnv, explicit: true };
  return { path: DEFAULT_CONFIG_PATH, explicit: false };
}

/** How to name a config path in a message, with both ways to choose another. */
export function missingConfigMessage(path: string): string {
  return `no config file at ${path}; pass --config FILE or set ${CONFIG_ENV}=FILE`;
}

/**
 * The config a command cannot do without (serve, check-config, rotate --offline, drill):
 * the flag, then KMS_BROKER_CONFIG, then /etc/kms-broker/config.yaml; an error naming the
 * path tried when that file does not exist.
 */
export function requiredConfigPath(flag: string | undefined): string {
  const { path } = choose(flag);
  if (!existsSync(path)) throw new BrokerError('CONFIG_INVALID', missingConfigMessage(path));
  return path;
}

/**
 * The config a command reads if there is one (status and the other admin API commands, usage,
 * inspect): a path named on purpose must exist (the reader says so when it does not); the
 * default counts only where it exists.
 */
export function optionalConfigPath(flag: string | undefined): string | undefined {
  const { path, explicit } = choose(flag);
  return explicit || existsSync(path) ? path : undefined;
}
