// A crypto thread: runs the cipher calls of one PKCS#11 module off the event loop. It loads
// the same library the main thread loaded and initialized (dlopen hands back the same one,
// and C_Initialize is process-wide), so the session and key handles of the main thread are
// valid here; it never initializes or finalizes the library itself.
import { workerData } from 'node:worker_threads';
import pkcs11js from 'pkcs11js';
import { performCipher } from './cipher-call.ts';
import { laneMemory, LaneState, readCall, STATE_INDEX, writeFailure, writeResult } from './lane-codec.ts';

export interface CryptoWorkerData {
  readonly modulePath: string;
  readonly lane: SharedArrayBuffer;
}

const { modulePath, lane } = workerData as CryptoWorkerData;
const lib = new pkcs11js.PKCS11();
lib.load(modulePath);
const { control, data } = laneMemory(lane);

/** Blocks until the event loop hands over a call, or asks the thread to stop. */
function nextCall(): boolean {
  for (;;) {
    const state = Atomics.load(control, STATE_INDEX);
    if (state === LaneState.request) return true;
    if (state === LaneState.stop) return false;
    Atomics.wait(control, STATE_INDEX, state);
  }
}

while (nextCall()) {
  try {
    writeResult(data, performCipher(lib, readCall(data)));
  } catch (error) {
    writeFailure(data, error);
  }
  Atomics.store(control, STATE_INDEX, LaneState.done);
  Atomics.notify(control, STATE_INDEX);
}
