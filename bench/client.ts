// The benchmark client: a process of its own (as the apiserver is) that drives one target.
// The target comes as JSON in argv; cases come as JSON lines on stdin, and each answer is
// one JSON line on stdout. A case with `waitForGo` is prepared and warmed up, answered with
// {"ready":true}, and started only at the next stdin line, so the orchestrator can reset
// the broker's event-loop histogram and memory peak right before a storm.
import { createInterface } from 'node:readline';
import { openDriver, type Operation, type Target } from './drivers.ts';
import { runLoad } from './load.ts';

export interface CaseSpec {
  readonly operation: Operation;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly maxCalls: number;
  /** Distinct ciphertexts that Decrypt calls walk through. */
  readonly inputs: number;
  /** Unmeasured calls first (connections up, code paths warm); Status before a storm. */
  readonly warmup: { readonly operation: Operation; readonly calls: number };
  readonly waitForGo: boolean;
}

const target = JSON.parse(process.argv[2] ?? '') as Target;
const driver = openDriver(target);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const send = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');

try {
  for (let next = await lines.next(); next.done !== true; next = await lines.next()) {
    const spec = JSON.parse(next.value) as CaseSpec;
    if (spec.operation === 'decrypt' || spec.warmup.operation === 'decrypt')
      await driver.prepare(spec.inputs);
    await runLoad(index => driver.call(spec.warmup.operation, index), {
      concurrency: spec.concurrency,
      durationMs: 10_000,
      maxCalls: spec.warmup.calls,
    });
    if (spec.waitForGo) {
      send({ ready: true });
      await lines.next();
    }
    send(await runLoad(index => driver.call(spec.operation, index), spec));
  }
} finally {
  driver.close();
}
