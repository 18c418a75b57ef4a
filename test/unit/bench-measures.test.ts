// The benchmark's resource arithmetic (bench/measures.ts): when an idle process counts as
// settled, CPU per 1,000 calls, and the broker's heap and event-loop figures from /metrics.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cpuPer1000Calls, eventLoopDelayMs, heapOf, settle } from '../../bench/measures.ts';

/** A reader that returns `values` in turn, and a sleep that only counts. */
function scripted(values: readonly number[]) {
  let next = 0;
  const slept: number[] = [];
  return {
    read: () => values[Math.min(next++, values.length - 1)] ?? NaN,
    sleep: (ms: number) => {
      slept.push(ms);
      return Promise.resolve();
    },
    slept,
  };
}

describe('bench measures', () => {
  it('settles at the first read within the tolerance of the one before', async () => {
    const reader = scripted([150, 120, 100.6, 100.2, 80]);
    const result = await settle(reader.read, { toleranceMb: 1, intervalMs: 500, maxReads: 10 }, reader.sleep);
    assert.deepEqual(result, { valueMb: 100.2, reads: 4, settled: true });
    assert.deepEqual(reader.slept, [500, 500, 500]);
  });

  it('stops at maxReads with the last read, marked as not settled', async () => {
    const reader = scripted([10, 20, 30, 40, 50, 60]);
    const result = await settle(reader.read, { toleranceMb: 1, intervalMs: 100, maxReads: 4 }, reader.sleep);
    assert.deepEqual(result, { valueMb: 40, reads: 4, settled: false });
    assert.equal(reader.slept.length, 3);
  });

  it('gives CPU per 1,000 calls in ms, to a tenth, and nothing without calls', () => {
    assert.equal(cpuPer1000Calls(250, 500), 500);
    assert.equal(cpuPer1000Calls(10, 3000), 3.3);
    assert.equal(cpuPer1000Calls(100, 0), undefined);
    assert.equal(cpuPer1000Calls(NaN, 10), undefined);
  });

  it('reads the heap and the event-loop delay (less the 10 ms sampling interval) from /metrics', () => {
    const metrics = [
      '# HELP nodejs_heap_size_used_bytes Process heap size used from Node.js in bytes.',
      'nodejs_heap_size_total_bytes 52428800',
      'nodejs_heap_size_used_bytes 31457280',
      'nodejs_eventloop_lag_p99_seconds 0.0254',
      'nodejs_eventloop_lag_max_seconds 0.004',
    ].join('\n');
    assert.deepEqual(heapOf(metrics), { heapUsedMb: 30, heapTotalMb: 50 });
    assert.equal(eventLoopDelayMs(metrics, 'p99'), 15.4);
    assert.equal(eventLoopDelayMs(metrics, 'max'), 0);
    assert.equal(heapOf('nodejs_heap_size_used_bytes 1'), undefined);
  });
});
