// A crypto thread that dies as its first call arrives, as a thread would that ran out of
// memory or hit a bug: the call in flight must fail, never wait forever.
import { workerData } from 'node:worker_threads';
import { laneMemory, LaneState, STATE_INDEX } from '../../src/backends/pkcs11/threads/lane-codec.ts';
import type { CryptoWorkerData } from '../../src/backends/pkcs11/threads/crypto-worker.ts';

const { control } = laneMemory((workerData as CryptoWorkerData).lane);
while (Atomics.load(control, STATE_INDEX) !== LaneState.request)
  Atomics.wait(control, STATE_INDEX, LaneState.idle, 10_000);
process.exit(7);
