// What a plugin costs beyond latency, measured the same way for the bare transport, every
// broker and the Go reference: CPU time around a case's measured calls, and the resident
// memory (and for the broker, V8 heap) it holds when started and left alone.
import type { CaseSpec } from './client.ts';
import type { LoadResult } from './load.ts';
import { cpuPer1000Calls, heapOf } from './measures.ts';
import { cpuTimeMs, idleResidentMemory } from './proc.ts';
import { adminGet, type Client } from './processes.ts';
import type { IdleResult } from './report.ts';

/** A case's latencies and, when a serving process was named, the CPU it spent on them. */
export type CaseOutcome = LoadResult & { readonly cpuMs?: number; readonly cpuMsPer1000Calls?: number };

/**
 * Runs a case and reads the serving process's CPU time around its measured part only: the
 * client answers once its inputs are sealed and the warm-up is done, then starts on "go".
 */
export async function runCase(
  client: Client,
  caseSpec: CaseSpec,
  server: number | undefined,
): Promise<CaseOutcome> {
  if (server === undefined) return client.run(caseSpec);
  let before = 0;
  const result = await client.runAfter(caseSpec, () => {
    before = cpuTimeMs(server);
    return Promise.resolve();
  });
  const cpuMs = cpuTimeMs(server) - before;
  const cpu = cpuPer1000Calls(cpuMs, result.calls + result.errors);
  return cpu === undefined ? result : { ...result, cpuMs, cpuMsPer1000Calls: cpu };
}

/** Idle memory of a plugin that has just started; the heap only where /metrics serves it. */
export async function measureIdle(group: string, pid: number, adminSocket?: string): Promise<IdleResult> {
  const rss = await idleResidentMemory(pid);
  const heap = adminSocket === undefined ? undefined : heapOf(await adminGet(adminSocket, '/metrics'));
  return {
    group,
    rssMb: rss.valueMb,
    settled: rss.settled,
    reads: rss.reads,
    ...(heap === undefined ? {} : { heap }),
  };
}
