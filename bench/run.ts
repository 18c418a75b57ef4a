// `npm run bench`: starts SoftHSM, OpenBao, the bare gRPC server, brokers in five
// configurations and the Go reference plugin, drives each from a separate client process,
// prints its tables and writes bench/results/<date>.json. Every process it starts is
// stopped at the end, also when a phase fails. `--quick` runs every case briefly (< 1 min).
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, homedir, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import * as prettier from 'prettier';
import { formatPublicKeyFile, generateEscrowKeyPair } from '../src/escrow/key-files.ts';
import { escrowBackend, pkcs11Backend, vaultBackend, writeConfig } from '../test/helpers/config.ts';
import { createTransitKey, enableTransit, startDevServer } from '../test/helpers/openbao.ts';
import { createToken, SOFTHSM_MODULE } from '../test/helpers/softhsm.ts';
import { measureCliStart, type CliStartResult } from './cli-start.ts';
import type { CaseSpec } from './client.ts';
import type { Operation, Target } from './drivers.ts';
import { adminGet, CleanUp, startClient, startService, waitUntil, type Client } from './processes.ts';
import type { CaseResult, IdleResult, Report, StormResult } from './report.ts';
import { runStorm, type StormRun } from './storm.ts';
import { printReport } from './tables.ts';
import { NETWORK_HSM, NETWORK_REFERENCE } from './report.ts';
import { judge } from './targets.ts';
import { measureIdle, runCase, type CaseOutcome } from './usage.ts';

const quick = process.argv.includes('--quick');
const profileDir = valueOf('--cpu-prof');
const CASE_MS = quick ? 200 : 2000;
const WARMUP_CALLS = quick ? 32 : 256;
/** A long-lived cluster's seeds (per the upstream discussion of issue 19), and issue 8's 1,000. */
const STORM_DEKS: readonly number[] = [50, 1000];
const OPERATIONS: readonly Operation[] = ['status', 'encrypt', 'decrypt'];
const HSM_OPERATIONS: readonly Operation[] = ['encrypt', 'decrypt'];
/** A network HSM (Luna, CloudHSM) as the test shim plays it: each PKCS#11 call a 1 ms round trip. */
const NETWORK_ROUND_TRIP_US = 1000;
const SHIM = join(new URL('..', import.meta.url).pathname, '.cache/pkcs11-shim/libkms-broker-shim.so');
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

async function main(): Promise<Report> {
  const started = Date.now();
  const loadAverageStart = loadAverage();
  const runDir = mkdtempSync(join(tmpdir(), 'kmsb-bench-'));
  const cleanUp = new CleanUp();
  cleanUp.push(() => rmSync(runDir, { recursive: true, force: true }));
  const cases: CaseResult[] = [];
  const storms: StormResult[] = [];
  const idle: IdleResult[] = [];
  const cliStarts: CliStartResult[] = [];
  const notes: string[] = [];
  const record = (group: string, operation: string, concurrency: number, result: CaseOutcome) => {
    cases.push({ group, operation, concurrency, ...result });
    process.stderr.write(
      `bench: ${group} ${operation} c${concurrency}: p50 ${result.p50Ms} ms, ${result.perSecond}/s\n`,
    );
  };
  /** `server`: the process whose CPU time the cases cost (none for the bare backend cases). */
  const sweep = async (
    group: string,
    client: Client,
    server: number | undefined,
    operations = OPERATIONS,
    concurrencies = CONCURRENCIES,
  ) => {
    for (const operation of operations)
      for (const concurrency of concurrencies)
        record(group, operation, concurrency, await runCase(client, spec(operation, concurrency), server));
  };
  const idleOf = async (group: string, pid: number, adminSocket?: string) => {
    const result = await measureIdle(group, pid, adminSocket);
    idle.push(result);
    process.stderr.write(`bench: ${group} idle RSS ${result.rssMb} MB after ${result.reads} reads\n`);
  };
  const stormsOf = async (scope: CleanUp, run: Omit<StormRun, 'deks'>) => {
    for (const deks of STORM_DEKS) {
      const storm = await runStorm(scope, { ...run, deks });
      storms.push(storm);
      process.stderr.write(
        `bench: ${run.group} storm of ${deks}: ${storm.wallMs} ms, peak ${storm.rssPeakMb} MB\n`,
      );
    }
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
    // The same token behind the test shim, every call a round trip away: a network HSM.
    const networkHsm = pkcs11Backend(token, { module: SHIM });
    const networkEnv = { ...env, KMS_BROKER_SHIM_LATENCY_US: String(NETWORK_ROUND_TRIP_US) };
    // The dev server's root token: a benchmark measures calls, not least privilege.
    const vault = vaultBackend(bao.address, { method: 'token', tokenFile: baoTokenFile });
    // An escrow wrap beside the HSM's on every seed: what the offline recovery key costs.
    const escrowKeyFile = join(runDir, 'escrow-public.pem');
    writeFileSync(escrowKeyFile, formatPublicKeyFile(generateEscrowKeyPair().publicKey));
    const escrow = escrowBackend(escrowKeyFile);

    // The transport limit: the same proto on the same kind of socket, answered at once.
    await phase(cleanUp, async scope => {
      const socket = join(runDir, 'bare.sock');
      const bare = await startService(scope, process.execPath, [join(ROOT, 'bench/bare-server.ts'), socket], {
        env,
        logFile: join(runDir, 'bare.log'),
        socket,
      });
      const client = startClient(scope, { kind: 'kms-v2', socket, connections: 1 }, env);
      await sweep('transport', client, bare.child.pid);
    });

    const brokers = [
      { group: 'softhsm', backends: [hsm], wrap: 'first', storm: true, v1: true, env },
      { group: 'openbao', backends: [vault], wrap: 'first', storm: true, v1: false, env },
      { group: 'first:hsm,vault', backends: [hsm, vault], wrap: 'first', storm: false, v1: false, env },
      { group: 'all:hsm,vault', backends: [hsm, vault], wrap: 'all', storm: false, v1: false, env },
      { group: 'first:hsm+escrow', backends: [hsm, escrow], wrap: 'first', storm: false, v1: false, env },
      { group: NETWORK_HSM, backends: [networkHsm], wrap: 'first', storm: false, v1: false, env: networkEnv },
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
          env: broker.env,
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
        const pid = service.child.pid as number;
        // Before any call: what a broker that just started holds.
        await idleOf(broker.group, pid, config.adminSocket);
        // Storms next, before the sweeps: after a restart the storm meets a fresh broker, and
        // its peak is then the storm's own, not the heap the concurrency-64 cases left behind.
        if (broker.storm)
          await stormsOf(scope, {
            group: broker.group,
            pid,
            socket: config.socket,
            env,
            adminSocket: config.adminSocket,
          });
        if (broker.group === 'softhsm') {
          // What an operator waits for a command, each run a fresh process (no profiler).
          cliStarts.push(...measureCliStart(CLI, config.path, token.env, quick ? 5 : 20));
          for (const cli of cliStarts)
            process.stderr.write(`bench: cli ${cli.command}: median ${cli.medianMs} ms\n`);
        }
        const target: Target = { kind: 'kms-v2', socket: config.socket, connections: 1 };
        const operations = broker.group === NETWORK_HSM ? HSM_OPERATIONS : OPERATIONS;
        await sweep(broker.group, startClient(scope, target, env), pid, operations);
        if (broker.v1) {
          const v1 = startClient(scope, { kind: 'kms-v1', socket: config.socket, connections: 1 }, env);
          record(broker.group, 'v1beta1 encrypt', 64, await runCase(v1, spec('encrypt', 64), pid));
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
      const hsmClient = startClient(scope, pkcs11, env);
      await sweep('bare pkcs11', hsmClient, undefined, ['encrypt', 'decrypt'], [1, 4]);
      const transit: Target = {
        kind: 'transit',
        address: bao.address,
        token: bao.rootToken,
        key: 'bench-bare',
      };
      // 32: the broker's default maxConcurrency towards Transit.
      const transitClient = startClient(scope, transit, env);
      await sweep('bare transit', transitClient, undefined, ['encrypt', 'decrypt'], [1, 32]);
    });

    const references = [
      { group: 'go reference', module: SOFTHSM_MODULE, env, storm: true },
      { group: NETWORK_REFERENCE, module: SHIM, env: networkEnv, storm: false },
    ];
    if (existsSync(REFERENCE_PLUGIN)) {
      for (const ref of references)
        await phase(cleanUp, async scope => {
          const socket = join(runDir, `${ref.group.replace(/[^a-z]/g, '-')}.sock`);
          const reference = await startService(
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
              ref.module,
            ],
            { env: ref.env, logFile: join(runDir, 'reference.log'), socket },
          );
          const pid = reference.child.pid as number;
          if (ref.storm) {
            await idleOf(ref.group, pid);
            // In the brokers' order: idle, storms, then the cases.
            await stormsOf(scope, { group: ref.group, pid, socket, env });
          }
          const target: Target = { kind: 'kms-v2', socket, connections: 1 };
          await sweep(
            ref.group,
            startClient(scope, target, env),
            pid,
            ref.storm ? OPERATIONS : HSM_OPERATIONS,
          );
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
      memoryMb: Math.round(totalmem() / 1024 / 1024),
      kernel: release(),
      node: process.version,
      loadAverageStart,
      loadAverageEnd: loadAverage(),
    },
    wallSeconds: Math.round((Date.now() - started) / 1000),
    cases,
    storms,
    idle,
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

const loadAverage = () => loadavg().map(load => Math.round(load * 100) / 100);

const report = await main();
const targets = judge(report);
printReport(report, targets);
const file = join(ROOT, 'bench/results', `${report.date.slice(0, 10)}${quick ? '-quick' : ''}.json`);
// Formatted as the repository's `prettier --check` expects, so a committed run passes the gate.
const json = JSON.stringify({ ...report, targets });
writeFileSync(file, await prettier.format(json, { ...(await prettier.resolveConfig(file)), filepath: file }));
process.stdout.write(`\nwrote ${file} (run took ${report.wallSeconds} s)\n`);
