// A startup storm: distinct seeds sealed first, then decrypted with 32 calls in flight spread
// over three channels, as three apiservers filling their caches after a restart. Each storm
// has a client process of its own (fresh connections, as after a restart) and measures the
// plugin process from the moment the client is warm: memory peak (VmHWM reset there), CPU
// time, and for the broker its event-loop delay and V8 heap from its own /metrics.
import type { CaseSpec } from './client.ts';
import type { Target } from './drivers.ts';
import { cpuPer1000Calls, eventLoopDelayMs, heapOf } from './measures.ts';
import { cpuTimeMs, residentMemory, resetPeakMemory } from './proc.ts';
import { adminGet, startClient, type CleanUp } from './processes.ts';
import type { StormResult } from './report.ts';

const STORM_CONCURRENCY = 32;
const STORM_CONNECTIONS = 3;

export interface StormRun {
  readonly group: string;
  /** Distinct seeds, each decrypted once. */
  readonly deks: number;
  /** The plugin process measured. */
  readonly pid: number;
  readonly socket: string;
  readonly env: NodeJS.ProcessEnv;
  /** The broker's admin socket (event loop, heap); the Go reference has none. */
  readonly adminSocket?: string;
}

export async function runStorm(scope: CleanUp, run: StormRun): Promise<StormResult> {
  const target: Target = { kind: 'kms-v2', socket: run.socket, connections: STORM_CONNECTIONS };
  const spec: CaseSpec = {
    operation: 'decrypt',
    concurrency: STORM_CONCURRENCY,
    durationMs: 60_000,
    maxCalls: run.deks,
    inputs: run.deks,
    // Status only: the connections are up, no Decrypt path is warm, as after a restart.
    warmup: { operation: 'status', calls: STORM_CONCURRENCY },
    waitForGo: true,
  };
  const client = startClient(scope, target, run.env);
  let before = residentMemory(run.pid);
  let peakReset = false;
  let cpuBefore = 0;
  const result = await client.runAfter(spec, async () => {
    if (run.adminSocket !== undefined) await adminGet(run.adminSocket, '/metrics'); // resets the event-loop histogram
    before = residentMemory(run.pid);
    peakReset = resetPeakMemory(run.pid);
    cpuBefore = cpuTimeMs(run.pid);
  });
  // /proc first: the scrape below allocates in the broker.
  const cpuMs = cpuTimeMs(run.pid) - cpuBefore;
  const after = residentMemory(run.pid);
  const metrics = run.adminSocket === undefined ? undefined : await adminGet(run.adminSocket, '/metrics');
  const cpu = cpuPer1000Calls(cpuMs, result.calls + result.errors);
  const heap = metrics === undefined ? undefined : heapOf(metrics);
  return {
    group: run.group,
    deks: run.deks,
    ...result,
    ...(metrics === undefined
      ? {}
      : {
          eventLoopDelayP99Ms: eventLoopDelayMs(metrics, 'p99'),
          eventLoopDelayMaxMs: eventLoopDelayMs(metrics, 'max'),
        }),
    rssBeforeMb: before.rssMb,
    rssPeakMb: after.peakMb,
    rssAfterMb: after.rssMb,
    peakSince: peakReset ? 'storm start' : 'process start',
    ...(heap === undefined ? {} : { heapAtEnd: heap }),
    ...(cpu === undefined ? {} : { cpuMs, cpuMsPer1000Calls: cpu }),
  };
}
