// The arithmetic behind the resource figures, kept free of /proc and sockets so it can be
// tested: when an idle process's memory has settled, CPU time per 1,000 calls, and the
// process figures the broker's own /metrics exposes (heap, event-loop delay).

export interface SettleOptions {
  /** Two consecutive reads this close (MB) count as settled. */
  readonly toleranceMb: number;
  readonly intervalMs: number;
  /** The bound: after this many reads the last one stands, marked as not settled. */
  readonly maxReads: number;
}

export interface Settled {
  readonly valueMb: number;
  readonly reads: number;
  readonly settled: boolean;
}

export const IDLE_SETTLE: SettleOptions = { toleranceMb: 1, intervalMs: 500, maxReads: 20 };

const pause = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/**
 * Reads `read()` (MB) every `intervalMs` while nothing else talks to the process, until two
 * consecutive reads agree within `toleranceMb`: a process that has just started is still
 * loading code and collecting its start-up garbage, so its first reading is not its idle size.
 */
export async function settle(
  read: () => number,
  options: SettleOptions = IDLE_SETTLE,
  sleep: (ms: number) => Promise<void> = pause,
): Promise<Settled> {
  let previous = read();
  for (let reads = 2; reads <= options.maxReads; reads++) {
    await sleep(options.intervalMs);
    const current = read();
    if (Math.abs(current - previous) <= options.toleranceMb)
      return { valueMb: current, reads, settled: true };
    previous = current;
  }
  return { valueMb: previous, reads: Math.max(1, options.maxReads), settled: false };
}

/** Milliseconds of CPU (user + system, all threads) per 1,000 calls; undefined without calls. */
export function cpuPer1000Calls(cpuMs: number, calls: number): number | undefined {
  if (calls <= 0 || !Number.isFinite(cpuMs)) return undefined;
  return Math.round((cpuMs / calls) * 1000 * 10) / 10;
}

/** One unlabelled sample of a Prometheus text exposition, or NaN when it is missing. */
function sample(metrics: string, name: string): number {
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics);
  return match === null ? NaN : Number(match[1]);
}

/**
 * prom-client's event-loop gauges come from monitorEventLoopDelay sampling every 10 ms; a
 * sample is the time between two timer runs, so the 10 ms interval is subtracted to leave
 * the delay itself.
 */
export function eventLoopDelayMs(metrics: string, which: 'p99' | 'max'): number {
  const seconds = sample(metrics, `nodejs_eventloop_lag_${which}_seconds`);
  return Math.round(Math.max(0, seconds * 1000 - 10) * 100) / 100;
}

export interface Heap {
  readonly heapUsedMb: number;
  readonly heapTotalMb: number;
}

/** V8's heap as prom-client reports it (process.memoryUsage()), or undefined when absent. */
export function heapOf(metrics: string): Heap | undefined {
  const used = sample(metrics, 'nodejs_heap_size_used_bytes');
  const total = sample(metrics, 'nodejs_heap_size_total_bytes');
  if (!Number.isFinite(used) || !Number.isFinite(total)) return undefined;
  const mb = (bytes: number) => Math.round(bytes / 1024 / 1024);
  return { heapUsedMb: mb(used), heapTotalMb: mb(total) };
}
