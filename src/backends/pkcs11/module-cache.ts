// One loaded, initialized PKCS#11 library per path per process: C_Initialize is process-
// wide, so two backends on the same library (two tokens) must share it, and only the last
// user may finalize it. Its crypto threads are the library's too: up to the most any user asks
// for, started as calls need them, stopped when it is reset (new ones start as calls need
// them) and when the last user releases it.
import { setTimeout as delay } from 'node:timers/promises';
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { BrokerError } from '../../errors.ts';
import { CryptoThreads } from './threads/crypto-threads.ts';

export interface LoadedModule {
  readonly module: graphene.Module;
  readonly threads: CryptoThreads;
  /**
   * Finalize and initialize again after a device error, once in-flight calls are done.
   * False when it was not done: another backend uses the library, or calls stayed in flight.
   */
  reset(isIdle: () => boolean): Promise<boolean>;
  release(): void;
}

interface Entry {
  module: graphene.Module;
  threads: CryptoThreads;
  users: number;
}

const loaded = new Map<string, Entry>();
/** How long a reset waits for calls in flight to end before it gives up (until the next attempt). */
export const RESET_IDLE_WAIT_MS = 3000;
const RESET_POLL_MS = 10;

/**
 * Loads the library, or shares it, with at least `threads` crypto threads: none for a user
 * that only manages objects or runs its calls itself (hsm-probe, tests).
 */
export function loadModule(path: string, threads = 0): LoadedModule {
  let entry = loaded.get(path);
  if (entry === undefined) {
    let module: graphene.Module;
    try {
      module = graphene.Module.load(path, 'kms-broker');
      // Without CKF_OS_LOCKING_OK SoftHSM disables its locks, yet the async calls run on
      // libuv's thread pool: concurrent operations would corrupt its state.
      module.initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (error) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `cannot load PKCS#11 module ${path}: ${(error as Error).message.split('\n')[0]}`,
      );
    }
    entry = { module, threads: new CryptoThreads(path, threads), users: 0 };
    loaded.set(path, entry);
  }
  entry.threads.grow(threads);
  entry.users++;
  const shared = entry;
  let released = false;
  return {
    module: shared.module,
    threads: shared.threads,
    async reset(isIdle) {
      // Finalizing under another user, or with an operation in flight, crashes some
      // libraries; in those cases only sessions are re-opened.
      if (shared.users > 1) return false;
      for (let waited = 0; !isIdle() && waited < RESET_IDLE_WAIT_MS; waited += RESET_POLL_MS)
        await delay(RESET_POLL_MS);
      if (!isIdle()) return false;
      try {
        shared.module.finalize();
      } catch {
        // Already finalized by the failure itself.
      }
      // Throws while the token's storage is still away; the next attempt initializes again.
      shared.module.initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
      shared.threads.restart();
      return true;
    },
    release() {
      if (released) return;
      released = true;
      shared.users--;
      if (shared.users > 0) return;
      loaded.delete(path);
      shared.threads.close();
      try {
        shared.module.finalize();
      } catch {
        // Nothing to finalize.
      }
    },
  };
}
