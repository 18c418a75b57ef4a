// `kms-broker rotate --complete`: completeRotation (src/rotation) wired to the admin API, the
// migration of `kms-broker migrate`, the etcd scan of `kms-broker usage` and the terminal.
// Steps report as lines on stderr; the outcome goes to stdout (text, or --json). Exit codes:
// 0 retired (or the operator declined), 1 a step failed or the old version is still needed,
// 2 usage, 3 broker unreachable, 6 the apiservers did not pick up the new key_id in time.
import { createInterface } from 'node:readline/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type { RotationView, VersionJudgement } from '../broker/ports.ts';
import { connectKube, findKubeconfig } from '../migrate/kube-client.ts';
import { lineProgress } from '../migrate/progress.ts';
import { waitForReseed } from '../migrate/reseed-wait.ts';
import { runMigration } from '../migrate/run.ts';
import { keyIdHash } from '../migrate/state.ts';
import { completeRotation, type RotationOutcome, type RotationPorts } from '../rotation/complete-rotation.ts';
import { resolveTarget, type AdminTarget } from './admin-client.ts';
import { call as adminCall, defaultRotationBackend } from './admin-commands.ts';
import { migrationSettings, runMigrating, type MigrateOptions } from './migrate.ts';
import { REWRITE_DEFAULTS } from './migrate-options.ts';
import { scanEtcd } from './usage.ts';
import { SCAN_DEFAULTS, type EtcdLocation } from './usage-options.ts';

export type RotateCompleteOptions = Omit<MigrateOptions, 'rate' | 'pageSize' | 'wait'> &
  EtcdLocation & { readonly yes?: boolean };

const EXIT_STOPPED = 1;

export async function rotateCompleteCommand(
  backendArgument: string | undefined,
  options: RotateCompleteOptions,
  usage: (message: string) => never,
): Promise<number> {
  if (options.yes !== true && process.stdin.isTTY !== true)
    return usage('error: rotate --complete asks before it retires a version; without a terminal, pass --yes');
  return runMigrating(
    signal => rotateComplete(backendArgument, options, signal),
    usage,
    'run rotate --complete again to go on where it stopped',
  );
}

async function rotateComplete(
  backendArgument: string | undefined,
  options: RotateCompleteOptions,
  signal: AbortSignal,
): Promise<number> {
  const migrateOptions = { ...options, ...REWRITE_DEFAULTS, wait: true };
  const migration = migrationSettings(migrateOptions, signal);
  const target = await resolveTarget(options, 'admin');
  const backend = backendArgument ?? (await defaultRotationBackend(target));
  const kube = await connectKube(findKubeconfig(options.kubeconfig));
  const write = (line: string) => process.stderr.write(`${line}\n`);
  const ports: RotationPorts = {
    rotation: () => call<RotationView>(target, 'GET', '/v1/rotation'),
    rotate: name => call(target, 'POST', `/v1/backends/${encodeURIComponent(name)}/rotate`),
    waitForReseed: keyId =>
      waitForReseed(kube, migration.apiservers ?? [kube.server], keyId, keyIdHash(keyId), {
        timeoutMs: migration.waitTimeoutMs,
        signal: signal,
      }),
    migrate: async keyId => {
      const result = await runMigration(
        { ...migration, wait: false },
        {
          kube,
          keyId: () => Promise.resolve(keyId),
          progress: lineProgress(line => write(`migrate: ${line}`)),
        },
      );
      const counted = result.resources.filter(
        entry => entry.rewritten !== undefined || entry.objects !== undefined,
      );
      const modes = [...new Set(result.resources.map(entry => entry.mode))].join(', ');
      return {
        resources: result.resources.map(entry => entry.resource),
        mode: result.alreadyDone ? `${modes}, done by an earlier run` : modes,
        ...(counted.length === result.resources.length && {
          objects: counted.reduce((sum, entry) => sum + (entry.rewritten ?? entry.objects ?? 0), 0),
        }),
      };
    },
    scan: async () => {
      const scan = await scanEtcd({ ...options, ...SCAN_DEFAULTS });
      await call(target, 'POST', '/v1/usage/scans', scan);
      return { scannedAt: scan.scannedAt, revision: scan.revision, objects: scan.objects };
    },
    usage: () => call<{ versions: VersionJudgement[] }>(target, 'GET', '/v1/usage'),
    retire: async (name, version) => {
      await call(
        target,
        'POST',
        `/v1/backends/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/retire`,
      );
    },
    confirm: async question => {
      const terminal = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return /^y(es)?$/i.test((await terminal.question(`${question} [y/N] `, { signal: signal })).trim());
      } finally {
        terminal.close();
      }
    },
    waitUntil: at => delay(Math.max(0, at.getTime() - Date.now()), undefined, { signal: signal }),
    now: () => new Date(),
    report: event => write(`${event.step}: ${event.message}`),
  };
  const outcome = await completeRotation(backend, ports, { yes: options.yes === true });
  process.stdout.write(options.json === true ? `${JSON.stringify(outcome, null, 2)}\n` : summary(outcome));
  return outcome.result === 'stopped' ? EXIT_STOPPED : 0;
}

/** The body of an admin API answer (refusals throw). */
async function call<T>(target: AdminTarget, method: string, path: string, body?: unknown): Promise<T> {
  return (await adminCall(target, method, path, body)).body as T;
}

function summary(outcome: RotationOutcome): string {
  const seconds = (ms = 0) => `${(ms / 1000).toFixed(1)} s`;
  const total = Object.values(outcome.took).reduce((sum, ms) => sum + ms, 0);
  const end = {
    retired: `rotation of ${outcome.backend} complete: retired version ${outcome.retired.join(', ')}`,
    declined: `rotation of ${outcome.backend} done up to the retirement, which was declined`,
    stopped: `rotation of ${outcome.backend} stopped before the retirement: see the scan lines above`,
  }[outcome.result];
  const steps = Object.entries(outcome.took)
    .map(([step, ms]) => `${step} ${seconds(ms)}`)
    .join(', ');
  return `${end}; key_id ${outcome.keyId}; ${seconds(total)} (${steps})\n`;
}
