// Latency summaries from recorded samples: exact percentiles from the sorted latencies
// (nearest rank), throughput from the wall time of the whole case.

export interface Summary {
  /** Calls that completed successfully. */
  readonly calls: number;
  readonly errors: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Successful calls per second over the case's wall time. */
  readonly perSecond: number;
  readonly wallMs: number;
}

export function summarize(latenciesMs: Float64Array, errors: number, wallMs: number): Summary {
  const sorted = latenciesMs.slice().sort();
  const at = (fraction: number) =>
    sorted.length === 0
      ? NaN
      : (sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)] ?? NaN);
  return {
    calls: sorted.length,
    errors,
    p50Ms: round(at(0.5)),
    p90Ms: round(at(0.9)),
    p99Ms: round(at(0.99)),
    maxMs: round(sorted.at(-1) ?? NaN),
    perSecond: Math.round((sorted.length / wallMs) * 1000),
    wallMs: Math.round(wallMs),
  };
}

/** Three significant decimals of a millisecond are below the noise of this machine. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
