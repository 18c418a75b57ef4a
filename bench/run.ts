// `npm run bench`: starts SoftHSM, OpenBao, the bare gRPC server, brokers in four
// configurations and the Go reference plugin, drives each from a separate client process,
// prints one table and writes bench/results/<date>.json. Every process it starts is
// stopped at the end, also when a phase fails. `--quick` runs every case briefly (< 1 min).
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as prettier from 'prettier';
import { formatPublicKeyFile, generateEscrowKeyPair } from '../src/escrow/key-files.ts';
import { escrowBackend, pkcs11Backend, vaultBackend, writeConfig } from '../test/helpers/config.ts';
import { createTransitKey, enableTransit, startDevServer } from '../test/helpers/openbao.ts';
import { createToken, SOFTHSM_MODULE } from '../test/helpers/softhsm.ts';
import { measureCliStart, type CliStartResult } from './cli-start.ts';
import type { CaseSpec } from './client.ts';
import type { Operation, Target } from './drivers.ts';
import type { LoadResult } from './load.ts';
import {
  adminGet,
  CleanUp,
  residentMemory,
  resetPeakMemory,
  startClient,
  startService,
  waitUntil,
  type Client,
} from './processes.ts';
import { judge, printReport, type CaseResult, type Report, type StormResult } from './report.ts';

const quick = process.argv.includes('--quick');
const profileDir = valueOf('--cpu-prof');
const CASE_MS = quick ? 200 : 2000;
const WARMUP_CALLS = quick ? 32 : 256;
const STORM_DEKS = 1000;
const STORM_CONCURRENCY = 32;
const STORM_CONNECTIONS = 3;
const OPERATIONS: readonly Operation[] = ['status', 'encrypt', 'decrypt'];
const CONCURRENCIES: readonly number[] = [1, 64];
const ROOT = new URL('..', import.meta.url).pathname;
const CLI = join(ROOT, 'bin/kms-broker');
const REFERENCE_PLUGIN =
  process.env['KMS_BENCH_REFERENCE_PLUGIN'] ??
  join(homedir(), '.cache/kms-broker/reference-plugin/kms-reference-plugin');

function valueOf(flag: string): string | undefined {
  const index = process.argv.indexOf(flag);
  return index < 0 ? undefined : process.argv[index + 1];
}

const spec = (operation: Operation, concurrency: number, extra: Partial<CaseSpec> = {}): CaseSpec => ({
  operation,
  concurrency,
  durationMs: CASE_MS,
  maxCalls: 1_000_000,
  inputs: 64,
  warmup: { operation, calls: WARMUP_CALLS },
  waitForGo: false,
  ...extra,
});

const stormSpec = spec('decrypt', STORM_CONCURRENCY, {
  durationMs: 60_000,
  maxCalls: STORM_DEKS,
  inputs: STORM_DEKS,
  warmup: { operation: 'status', calls: STORM_CONCURRENCY },
});

async function main(): Promise<Report> {
  const started = Date.now();
  const runDir = mkdtempSync(join(tmpdir(), 'kmsb-bench-'));
  const cleanUp = new CleanUp();
  cleanUp.push(() => rmSync(runDir, { recursive: true, force: true }));
  const cases: CaseResult[] = [];
  const storms: StormResult[] = [];
  const cliStarts: CliStartResult[] = [];
  const notes: string[] = [];
  const record = (group: string, operation: string, concurrency: number, result: LoadResult) => {
    cases.push({ group, operation, concurrency, ...result });
    process.stderr.write(
      `bench: ${group} ${operation} c${concurrency}: p50 ${result.p50Ms} ms, ${result.perSecond}/s\n`,
    );
  };
  const sweep = async (
    group: string,
    client: Client,
    operations = OPERATIONS,
    concurrencies = CONCURRENCIES,
  ) => {
    for (const operation of operations)
      for (const concurrency of concurrencies)
        record(group, operation, concurrency, await client.run(spec(operation, concurrency)));
  };
  try {
    const token = createToken('bench', join(runDir, 'hsm'));
    const bao = await startDevServer();
    cleanUp.push(() => bao.stop());
    await enableTransit(bao);
    await createTransitKey(bao, 'bench-bare');
    const baoTokenFile = join(runDir, 'bao-token');
    writeFileSync(baoTokenFile, bao.rootToken + '\n', { mode: 0o600 });
    const env = {
      ...token.env,
      ...(profileDir === undefined ? {} : { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` }),
    };
    const hsm = pkcs11Backend(token);
    // The dev server's root token: a benchmark measures calls, not least privilege.
    const vault = vaultBackend(bao.address, { method: 'token', tokenFile: baoTokenFile });
    // An escrow wrap beside the HSM's on every seed: what the offline recovery key costs.
    const escrowKeyFile = join(runDir, 'escrow-public.pem');
    writeFileSync(escrowKeyFile, formatPublicKeyFile(generateEscrowKeyPair().publicKey));
    const escrow = escrowBackend(escrowKeyFile);

    // The transport limit: the same proto on the same kind of socket, answered at once.
    await phase(cleanUp, async scope => {
      const socket = join(runDir, 'bare.sock');
      await startService(scope, process.execPath, [join(ROOT, 'bench/bare-server.ts'), socket], {
        env,
        logFile: join(runDir, 'bare.log'),
        socket,
      });
      await sweep('transport', startClient(scope, { kind: 'kms-v2', socket, connections: 1 }, env));
    });

    const brokers = [
      { group: 'softhsm', backends: [hsm], wrap: 'first', storm: true, v1: true },
      { group: 'openbao', backends: [vault], wrap: 'first', storm: true, v1: false },
      { group: 'first:hsm,vault', backends: [hsm, vault], wrap: 'first', storm: false, v1: false },
      { group: 'all:hsm,vault', backends: [hsm, vault], wrap: 'all', storm: false, v1: false },
      { group: 'first:hsm+escrow', backends: [hsm, escrow], wrap: 'first', storm: false, v1: false },
    ];
    for (const broker of brokers) {
      await phase(cleanUp, async scope => {
        const dir = join(runDir, broker.group.replace(/[^a-z]/g, '-'));
        mkdirSync(dir);
        const config = writeConfig(
          undefined,
          {
            backends: broker.backends,
            failover: { order: broker.backends.map(backend => backend.name), wrap: broker.wrap },
            // The defaults an operator would run with (the test helper probes faster and
            // logs every call at debug).
            health: {},
            log: { level: 'info' },
          },
          dir,
        );
        const service = await startService(scope, CLI, ['serve', '--config', config.path], {
          env,
          logFile: join(dir, 'broker.log'),
          socket: config.socket,
        });
        // The admin API (metrics) comes up just after the KMS socket.
        await waitUntil('the admin API', 20_000, () =>
          adminGet(config.adminSocket, '/readyz').then(
            () => true,
            () => false,
          ),
        );
        if (broker.group === 'softhsm') {
          // What an operator waits for a command, each run a fresh process (no profiler).
          cliStarts.push(...measureCliStart(CLI, config.path, token.env, quick ? 5 : 20));
          for (const cli of cliStarts)
            process.stderr.write(`bench: cli ${cli.command}: median ${cli.medianMs} ms\n`);
        }
        const target: Target = { kind: 'kms-v2', socket: config.socket, connections: 1 };
        await sweep(broker.group, startClient(scope, target, env));
        if (broker.v1) {
          const v1 = startClient(scope, { kind: 'kms-v1', socket: config.socket, connections: 1 }, env);
          record(broker.group, 'v1beta1 encrypt', 64, await v1.run(spec('encrypt', 64)));
        }
        if (broker.storm) {
          const pid = service.child.pid as number;
          const client = startClient(scope, { ...target, connections: STORM_CONNECTIONS }, env);
          let before = residentMemory(pid);
          let peakReset = false;
          const result = await client.runAfter(stormSpec, async () => {
            await adminGet(config.adminSocket, '/metrics'); // resets the event-loop histogram
            before = residentMemory(pid);
            peakReset = resetPeakMemory(pid);
          });
          const metrics = await adminGet(config.adminSocket, '/metrics');
          const after = residentMemory(pid);
          storms.push({
            group: broker.group,
            ...result,
            eventLoopDelayP99Ms: eventLoopDelay(metrics, 'p99'),
            eventLoopDelayMaxMs: eventLoopDelay(metrics, 'max'),
            rssBeforeMb: before.rssMb,
            rssPeakMb: after.peakMb,
            rssAfterMb: after.rssMb,
            peakSince: peakReset ? 'storm start' : 'process start',
          });
        }
      });
    }

    // The bare backend operations, from a client process of the same kind.
    await phase(cleanUp, async scope => {
      const pkcs11: Target = {
        kind: 'pkcs11',
        module: SOFTHSM_MODULE,
        tokenLabel: token.label,
        pinFile: token.pinFile,
        keyLabel: 'kek-v1',
        sessions: 4,
      };
      // Four sessions: the broker's default pool, so c4 is the most the broker can ask of it.
      await sweep('bare pkcs11', startClient(scope, pkcs11, env), ['encrypt', 'decrypt'], [1, 4]);
      const transit: Target = {
        kind: 'transit',
        address: bao.address,
        token: bao.rootToken,
        key: 'bench-bare',
      };
      // 32: the broker's default maxConcurrency towards Transit.
      await sweep('bare transit', startClient(scope, transit, env), ['encrypt', 'decrypt'], [1, 32]);
    });

    if (existsSync(REFERENCE_PLUGIN)) {
      await phase(cleanUp, async scope => {
        const socket = join(runDir, 'reference.sock');
        await startService(
          scope,
          REFERENCE_PLUGIN,
          [
            '-socket',
            socket,
            '-token-label',
            token.label,
            '-pin-file',
            token.pinFile,
            '-module',
            SOFTHSM_MODULE,
          ],
          { env, logFile: join(runDir, 'reference.log'), socket },
        );
        const target: Target = { kind: 'kms-v2', socket, connections: 1 };
        await sweep('go reference', startClient(scope, target, env));
        const storm = await startClient(scope, { ...target, connections: STORM_CONNECTIONS }, env).run(
          stormSpec,
        );
        storms.push({ group: 'go reference', ...storm });
      });
    } else {
      notes.push(
        `Go reference plugin not run: ${REFERENCE_PLUGIN} was not built (see bench/build-reference-plugin.sh output).`,
      );
    }
  } finally {
    await cleanUp.run();
  }
  return {
    date: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    caseMs: CASE_MS,
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model ?? '',
      loadAverage: loadavg().map(load => Math.round(load * 100) / 100),
      node: process.version,
    },
    wallSeconds: Math.round((Date.now() - started) / 1000),
    cases,
    storms,
    cliStarts,
    notes,
  };
}

/** Runs one phase with its own clean-up scope: its processes stop before the next phase starts. */
async function phase(parent: CleanUp, body: (scope: CleanUp) => Promise<void>): Promise<void> {
  const scope = new CleanUp();
  parent.push(() => scope.run());
  try {
    await body(scope);
  } finally {
    await scope.run();
  }
}

/**
 * prom-client's event-loop gauges come from monitorEventLoopDelay sampling every 10 ms; a
 * sample is the time between two timer runs, so the 10 ms interval is subtracted to leave
 * the delay itself.
 */
function eventLoopDelay(metrics: string, which: 'p99' | 'max'): number {
  const match = new RegExp(`^nodejs_eventloop_lag_${which}_seconds (\\S+)$`, 'm').exec(metrics);
  if (match === null) return NaN;
  return Math.round(Math.max(0, Number(match[1]) * 1000 - 10) * 100) / 100;
}

const report = await main();
const targets = judge(report);
printReport(report, targets);
const file = join(ROOT, 'bench/results', `${report.date.slice(0, 10)}${quick ? '-quick' : ''}.json`);
// Formatted as the repository's `prettier --check` expects, so a committed run passes the gate.
const json = JSON.stringify({ ...report, targets });
writeFileSync(file, await prettier.format(json, { ...(await prettier.resolveConfig(file)), filepath: file }));
process.stdout.write(`\nwrote ${file} (run took ${report.wallSeconds} s)\n`);
