// Hands back the memory that starting a broker needed and serving does not. Start-up runs a
// lot of code exactly once (the YAML parser, the config schema's compiled validators, the
// admin API's route and OpenAPI setup, the gRPC loader): its bytecode, the V8 heap it grew
// and the young generation its garbage widened stay resident while the broker idles, since
// an idle process runs no garbage collection that would return them. One memory-reducing
// collection right after start-up returns them: about 10 MB of a SoftHSM broker's idle RSS
// (docs/performance.md#memory). Code that runs again is compiled again on its first call.
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** V8's gc() extension: `last-resort` is its memory-reducing flavour (flushes unused bytecode too). */
type GcFunction = (options?: { type: 'major'; flavor: 'last-resort' }) => void;

/**
 * V8's collector as a function, without --expose-gc on the command line: the flag takes
 * effect for contexts created after it, so a throwaway context gets `gc` and the broker's
 * own global never has one. Null where this V8 refuses.
 */
function collector(): GcFunction | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('typeof gc === "function" ? gc : undefined');
    setFlagsFromString('--no-expose-gc'); // contexts made later (vm, workers) get none
    return typeof gc === 'function' ? (gc as GcFunction) : null;
  } catch {
    return null;
  }
}

/** Runs one memory-reducing full collection; returns how long it paused the process (ms). */
export function releaseStartupMemory(gc: GcFunction | null = collector()): number | undefined {
  if (gc === null) return undefined;
  const started = performance.now();
  gc({ type: 'major', flavor: 'last-resort' });
  return Math.round(performance.now() - started);
}
