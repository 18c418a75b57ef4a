// A closed-loop load generator: `concurrency` workers each issue the next call as soon as
// the previous one settles, until the time budget or the call budget runs out. Latencies go
// into a preallocated typed array, so recording them allocates nothing per call.
import { summarize, type Summary } from './stats.ts';

export interface LoadOptions {
  readonly concurrency: number;
  /** Stop issuing calls after this long (ms)... */
  readonly durationMs: number;
  /** ...or after this many calls, whichever comes first. */
  readonly maxCalls: number;
}

export interface LoadResult extends Summary {
  /** The first failure's text, to say why a case had errors (never secrets: gRPC details). */
  readonly firstError?: string;
}

/** `call(index)` gets the call's sequence number, so a case can walk a list of inputs. */
export async function runLoad(
  call: (index: number) => Promise<unknown>,
  options: LoadOptions,
): Promise<LoadResult> {
  const latencies = new Float64Array(options.maxCalls);
  let issued = 0;
  let recorded = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const stopAt = started + options.durationMs;
  const worker = async () => {
    while (issued < options.maxCalls && performance.now() < stopAt) {
      const index = issued++;
      const callStarted = performance.now();
      try {
        await call(index);
        latencies[recorded++] = performance.now() - callStarted;
      } catch (error) {
        errors++;
        firstError ??= describe(error);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const summary = summarize(latencies.subarray(0, recorded), errors, performance.now() - started);
  return firstError === undefined ? summary : { ...summary, firstError };
}

function describe(error: unknown): string {
  if (error instanceof Error) return 'details' in error ? String(error.details) : error.message;
  return String(error);
}
