// The crypto threads of one loaded PKCS#11 module. SoftHSM does most of an operation's work
// in C_EncryptInit/C_DecryptInit, which pkcs11js runs synchronously, so on the event loop
// they stall every other call; here each call runs, init and crypto both, on a worker
// thread. Each thread has a lane of shared memory: the event loop writes the call and
// flips the state word, the thread (blocked in Atomics.wait) runs it and flips it back, and
// Atomics.waitAsync wakes the event loop. Threads start as calls would otherwise wait (each
// costs about 10 MB of RSS), up to the most allowed; beyond that a call waits for a free
// lane in FIFO order.
import { Worker } from 'node:worker_threads';
import { SessionPool } from '../session-pool.ts';
import type { CipherCall, CipherResult } from './cipher-call.ts';
import type { CryptoWorkerData } from './crypto-worker.ts';
import {
  allocateLane,
  laneMemory,
  LaneState,
  readResult,
  STATE_INDEX,
  writeCall,
  type LaneMemory,
} from './lane-codec.ts';

// Beside this module: crypto-worker.ts under src/ (type stripping), .js in dist/.
const WORKER_URL = new URL(
  `./crypto-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`,
  import.meta.url,
);
/** A thread holds a few buffers per call: a small heap is plenty, and keeps its RSS small. */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 };

/** One worker and its own lane memory: a replaced worker never sees its successor's calls. */
interface Thread {
  readonly worker: Worker;
  readonly memory: LaneMemory;
  /** Why it stopped, once it did: its error, or its exit code. */
  stopped: string | undefined;
}

class CryptoLane {
  readonly #modulePath: string;
  readonly #workerUrl: URL;
  #thread: Thread | undefined;

  constructor(modulePath: string, workerUrl: URL) {
    this.#modulePath = modulePath;
    this.#workerUrl = workerUrl;
    this.#thread = this.#spawn();
  }

  async run(call: CipherCall): Promise<CipherResult> {
    const thread = (this.#thread ??= this.#spawn());
    const { control, data } = thread.memory;
    writeCall(data, call);
    // Referenced only while a call is in flight: an idle thread never keeps the process alive.
    thread.worker.ref();
    Atomics.store(control, STATE_INDEX, LaneState.request);
    Atomics.notify(control, STATE_INDEX);
    const wait = Atomics.waitAsync(control, STATE_INDEX, LaneState.request);
    if (wait.async) await wait.value;
    thread.worker.unref();
    // Woken by the thread's answer, or by its exit (see #spawn).
    const answered = Atomics.load(control, STATE_INDEX) === LaneState.done;
    Atomics.store(control, STATE_INDEX, LaneState.idle);
    if (!answered)
      throw new Error(`CKR_DEVICE_ERROR: the crypto thread stopped (${thread.stopped ?? 'stopped'})`);
    return readResult(data, call);
  }

  /** Stops the thread; a call after this starts a new one. Only while no call is in flight. */
  stop(): void {
    const thread = this.#thread;
    if (thread === undefined) return;
    this.#thread = undefined;
    Atomics.store(thread.memory.control, STATE_INDEX, LaneState.stop);
    Atomics.notify(thread.memory.control, STATE_INDEX);
    // It leaves its loop on its own; terminate only ends what is left of it sooner.
    void thread.worker.terminate();
  }

  #spawn(): Thread {
    const lane = allocateLane();
    const workerData: CryptoWorkerData = { modulePath: this.#modulePath, lane };
    const worker = new Worker(this.#workerUrl, { workerData, resourceLimits: WORKER_LIMITS });
    worker.unref();
    const thread: Thread = { worker, memory: laneMemory(lane), stopped: undefined };
    let failure = '';
    worker.on('error', (error: Error) => {
      failure = error.message.split('\n')[0] ?? '';
    });
    worker.once('exit', code => {
      thread.stopped = failure || `exit code ${code}`;
      if (this.#thread === thread) this.#thread = undefined;
      // A call in flight on it would wait forever: wake it, unanswered.
      const { control } = thread.memory;
      if (Atomics.load(control, STATE_INDEX) === LaneState.request) {
        Atomics.store(control, STATE_INDEX, LaneState.idle);
        Atomics.notify(control, STATE_INDEX);
      }
    });
    return thread;
  }
}

/**
 * The threads of one module as a pool of lanes (the project's SessionPool): a lane is made
 * when a call finds none free and fewer than the most allowed exist, a call beyond them waits
 * in FIFO order until its deadline, and a discarded lane stops its thread.
 */
export class CryptoThreads {
  readonly #pool: SessionPool<CryptoLane>;

  /** `workerUrl`: the thread's script, for tests that need a thread that fails. */
  constructor(modulePath: string, max: number, workerUrl = WORKER_URL) {
    this.#pool = new SessionPool<CryptoLane>(
      { create: () => new CryptoLane(modulePath, workerUrl), destroy: lane => lane.stop() },
      max,
      // Every waiting call holds an HSM session, which its backend's pool bounds already.
      Number.POSITIVE_INFINITY,
    );
  }

  /** Threads started and not stopped. */
  get size(): number {
    return this.#pool.held;
  }

  /** Up to `max` threads: a second backend on the module may ask for more. */
  grow(max: number): void {
    if (max > this.#pool.size) this.#pool.resize(max);
  }

  /**
   * Runs the call on a free thread, on a new one while fewer than the most allowed run (an
   * idle broker holds none, a lightly used one one), or on the next to come free; gives up
   * waiting for one when `signal` fires.
   */
  async run(call: CipherCall, signal: AbortSignal): Promise<CipherResult> {
    if (this.#pool.size === 0)
      throw new Error('CKR_FUNCTION_FAILED: the module was loaded without crypto threads');
    const lane = await this.#pool.acquire(signal);
    try {
      return await lane.run(call);
    } finally {
      this.#pool.release(lane);
    }
  }

  /**
   * After the module was finalized and initialized again (a device reset, with no call in
   * flight): the threads stop, and new ones start as calls need them.
   */
  restart(): void {
    this.#pool.discardIdle();
  }

  close(): void {
    this.#pool.close();
  }
}
