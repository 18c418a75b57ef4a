// `kms-broker migrate`: re-encrypt stored data under the broker's current key_id through the
// Kubernetes API. The work is runMigration (src/migrate/run.ts); this file turns flags into its
// options, the admin API into its key_id, and its result into text or JSON and an exit code:
// 0 migrated (or already done for this key_id), 1 failed, 2 bad input, 3 broker unreachable,
// 6 the apiservers have not picked up the key_id (nothing was rewritten; run it again later).
import { BrokerError, isBrokerError, toBrokerError } from '../errors.ts';
import { connectKube, findKubeconfig } from '../migrate/kube-client.ts';
import { barProgress, lineProgress, silentProgress, type Progress } from '../migrate/progress.ts';
import { MigrateInputError, parseResourceList, resourcesFromEncryptionConfig } from '../migrate/resources.ts';
import { runMigration, type MigrationOptions, type MigrationResult } from '../migrate/run.ts';
import { defaultStatePath } from '../migrate/state.ts';
import { request, resolveTarget, UnreachableError, type AdminOptions } from './admin-client.ts';

export const EXIT_RESEED_TIMEOUT = 6;

export interface MigrateOptions extends AdminOptions {
  readonly kubeconfig?: string;
  readonly resources?: string;
  readonly encryptionConfig?: string;
  readonly mode: string;
  readonly rate: string;
  readonly pageSize: string;
  readonly apiserverUrls?: string;
  readonly waitTimeout: string;
  /** commander's --no-wait. */
  readonly wait: boolean;
  readonly migrationTimeout: string;
  readonly stateFile?: string;
  readonly json?: boolean;
}

function number(value: string, flag: string, min: number): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < min)
    throw new MigrateInputError(`${flag} ${value}: must be a number ≥ ${min}`);
  return parsed;
}

function urls(list: string): string[] {
  return list
    .split(',')
    .filter(entry => entry.trim() !== '')
    .map(entry => {
      const trimmed = entry.trim().replace(/\/+$/, '');
      let url: URL;
      try {
        url = new URL(trimmed);
      } catch {
        throw new MigrateInputError(`--apiserver-urls: '${trimmed}' is not a URL; write https://host:6443`);
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:')
        throw new MigrateInputError(`--apiserver-urls: '${trimmed}' is not an http(s) URL`);
      return trimmed;
    });
}

/** runMigration's options from the flags; MigrateInputError names a bad one. */
export function migrationSettings(options: MigrateOptions, signal: AbortSignal): MigrationOptions {
  if (options.resources !== undefined && options.encryptionConfig !== undefined)
    throw new MigrateInputError('--resources and --encryption-config: give one of them, not both');
  const mode = options.mode;
  if (mode !== 'auto' && mode !== 'svm' && mode !== 'rewrite')
    throw new MigrateInputError(`--mode ${mode}: must be auto, svm or rewrite`);
  const resources =
    options.encryptionConfig !== undefined
      ? resourcesFromEncryptionConfig(options.encryptionConfig)
      : parseResourceList(options.resources ?? 'secrets');
  return {
    resources,
    mode,
    wait: options.wait,
    waitTimeoutMs: number(options.waitTimeout, '--wait-timeout', 1) * 1000,
    rate: number(options.rate, '--rate', 0),
    pageSize: Math.floor(number(options.pageSize, '--page-size', 1)),
    migrationTimeoutMs: number(options.migrationTimeout, '--migration-timeout', 1) * 1000,
    statePath: options.stateFile ?? defaultStatePath(),
    signal,
    ...(options.apiserverUrls !== undefined && { apiservers: urls(options.apiserverUrls) }),
  };
}

/** The broker's current key_id, from the admin API. */
export async function brokerKeyId(options: AdminOptions): Promise<string> {
  const target = await resolveTarget(options, 'viewer');
  const response = await request(target, 'GET', '/v1/status');
  const body = response.body as { keyId?: unknown; code?: string; detail?: string };
  if (response.status !== 200 || typeof body.keyId !== 'string') {
    const code = (body.code ?? 'INTERNAL') as BrokerError['code'];
    throw new BrokerError(code, `admin API GET /v1/status: ${body.detail ?? `HTTP ${response.status}`}`);
  }
  return body.keyId;
}

function summary(result: MigrationResult): string {
  const lines = [
    result.alreadyDone
      ? `already migrated: every resource was re-encrypted under key_id ${result.keyId} by an earlier run; nothing to do`
      : `migrated under key_id ${result.keyId} in ${(result.durationMs / 1000).toFixed(1)} s`,
  ];
  for (const entry of result.resources) {
    const detail =
      entry.mode === 'svm'
        ? `StorageVersionMigration ${entry.migration ?? ''}${entry.objects !== undefined ? `, ${entry.objects} objects` : ''}`
        : `${entry.rewritten ?? 0} rewritten${entry.resumedFrom ? `, ${entry.resumedFrom} in an earlier run` : ''}${entry.gone ? `, ${entry.gone} deleted meanwhile` : ''}`;
    lines.push(`  ${entry.resource}: ${entry.status} (${entry.mode}: ${detail})`);
  }
  lines.push(`state: ${result.statePath}`);
  return `${lines.join('\n')}\n`;
}

/**
 * Runs a command that migrates, resolving with its exit code: Ctrl-C or SIGTERM aborts the
 * signal it is given; bad input is a usage error (exit 2); a re-seed timeout exits 6; an
 * interruption is MIGRATION_FAILED saying how to go on (`resume`). Other errors propagate to
 * main (exit 1, or 3 unreachable).
 */
export async function runMigrating(
  run: (signal: AbortSignal) => Promise<number>,
  usage: (message: string) => never,
  resume: string,
): Promise<number> {
  const controller = new AbortController();
  const onSignal = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await run(controller.signal);
  } catch (error) {
    if (error instanceof MigrateInputError) return usage(`error: ${error.message}`);
    if (error instanceof UnreachableError) throw error;
    if (isBrokerError(error) && error.code === 'RESEED_TIMEOUT') {
      process.stderr.write(`kms-broker: ${error.code}: ${error.message}\n`);
      return EXIT_RESEED_TIMEOUT;
    }
    if (controller.signal.aborted) throw new BrokerError('MIGRATION_FAILED', `interrupted; ${resume}`);
    throw isBrokerError(error) ? error : toBrokerError(error);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function migrateCommand(options: MigrateOptions, usage: (message: string) => never): Promise<number> {
  return runMigrating(
    async signal => {
      const migration = migrationSettings(options, signal);
      const kube = await connectKube(findKubeconfig(options.kubeconfig));
      const progress: Progress =
        options.json === true
          ? silentProgress
          : process.stderr.isTTY
            ? await barProgress(process.stderr)
            : lineProgress(line => process.stderr.write(`${line}\n`));
      let result: MigrationResult;
      try {
        result = await runMigration(migration, { kube, keyId: () => brokerKeyId(options), progress });
      } finally {
        progress.stop();
      }
      process.stdout.write(options.json === true ? `${JSON.stringify(result, null, 2)}\n` : summary(result));
      return 0;
    },
    usage,
    'what was done is kept in the state file, run migrate again to go on',
  );
}
