// The HSM's storage taken away for about a second and given back, as in issue 13: SoftHSM
// then fails every call (CKR_GENERAL_ERROR; sessions replaced in recovery cannot log in)
// until the library is initialized again. While it is away a Decrypt of a valid ciphertext
// answers UNAVAILABLE, never UNKNOWN_KEY_VERSION or INVALID_ARGUMENT; once it is back the
// broker recovers by itself (probes and calls drive the recovery, escalating to a library
// reset) within the bound docs/architecture.md states, and every ciphertext decrypts again.
// In-process broker on a real SoftHSM token and a real socket.
import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { startApp, type RunningApp } from '../../src/app.ts';
import { RESET_IDLE_WAIT_MS } from '../../src/backends/pkcs11/module-cache.ts';
import { RECOVERY_BACKOFF_MAX_MS } from '../../src/backends/pkcs11/recovery-schedule.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { createLogger } from '../../src/log.ts';
import { writeConfig } from '../helpers/config.ts';
import { decryptOne, encryptSome, pause, until, type Sealed } from '../helpers/fault-injection.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const PROBE_INTERVAL_MS = 200;
/** The stated bound: the next probe after the backoff, plus a reset's wait for calls in flight. */
const RECOVERY_BOUND_MS = PROBE_INTERVAL_MS + RECOVERY_BACKOFF_MAX_MS + RESET_IDLE_WAIT_MS;
const LOSS_MS = 1000;
const UNAVAILABLE: number = GrpcStatus.UNAVAILABLE;

interface Answer {
  readonly at: number;
  /** 0 (OK) or the gRPC status code. */
  readonly code: number;
  readonly details: string;
}

/** Decrypts the envelopes round-robin from a few workers until stopped; records every answer. */
function keepDecrypting(client: KmsV2Client, sealed: readonly Sealed[]) {
  const answers: Answer[] = [];
  let stopped = false;
  let next = 0;
  const worker = async () => {
    while (!stopped) {
      const item = sealed[next++ % sealed.length];
      if (item === undefined) throw new Error('no envelopes');
      try {
        const plaintext = await decryptOne(client, item);
        const right = plaintext.equals(item.seed);
        answers.push({ at: Date.now(), code: right ? 0 : -1, details: right ? '' : 'wrong plaintext' });
      } catch (error) {
        const { code, details } = error as { code?: number; details?: string };
        answers.push({ at: Date.now(), code: code ?? -2, details: details ?? String(error) });
      }
      await pause(10); // pacing, so an outage's fast failures do not spin a core
    }
  };
  const workers = Array.from({ length: 4 }, worker);
  return {
    answers,
    async stop() {
      stopped = true;
      await Promise.all(workers);
    },
  };
}

describe('HSM storage lost for a second and given back', () => {
  let token: SoftHsmToken;
  let app: RunningApp;
  let client: KmsV2Client;
  let sealed: Sealed[];
  const log = memoryLog();
  const tokens = () => join(token.dir, 'tokens');
  const away = () => `${tokens()}.away`;

  before(async () => {
    token = createToken();
    process.env.SOFTHSM2_CONF = token.conf;
    const config = writeConfig(token, { health: { probeIntervalMs: PROBE_INTERVAL_MS } });
    const { config: loaded, readFile } = loadConfigFile(config.path);
    app = await startApp(loaded, { logger: createLogger('info', log.stream), readFile });
    client = createKmsV2Client(config.socket);
    sealed = await encryptSome(client, 16);
  });

  after(async () => {
    client.close();
    await app.shutdown();
    token.remove();
  });

  /** Takes the token folder away for LOSS_MS, at least until a Decrypt has noticed; returns when it is back. */
  async function loseStorage(noticed: () => boolean): Promise<number> {
    const lostAt = Date.now();
    renameSync(tokens(), away());
    try {
      await until(
        () => Promise.resolve(noticed()),
        seen => seen,
        'the loss noticed',
      );
      await pause(Math.max(0, lostAt + LOSS_MS - Date.now())); // the fault's schedule
    } finally {
      renameSync(away(), tokens());
    }
    return Date.now();
  }

  const recoveries = () => log.records().filter(record => record.msg === 'recovering HSM connection').length;

  it('answers UNAVAILABLE while the storage is away and recovers by itself once it is back', async () => {
    const traffic = keepDecrypting(client, sealed);
    let backAt: number;
    const attemptsBefore = recoveries();
    try {
      await until(
        () => Promise.resolve(traffic.answers.filter(answer => answer.code === 0).length),
        ok => ok >= 8,
        'decrypts before the loss',
      );
      const lostFrom = traffic.answers.length;
      backAt = await loseStorage(() =>
        traffic.answers.slice(lostFrom).some(answer => answer.code === UNAVAILABLE),
      );
      await until(
        () => Promise.resolve(traffic.answers.some(answer => answer.at > backAt && answer.code === 0)),
        recovered => recovered,
        'a Decrypt answered after the storage returned',
        RECOVERY_BOUND_MS,
      );
    } finally {
      await traffic.stop();
    }

    const failures = traffic.answers.filter(answer => answer.code !== 0);
    assert.ok(failures.length > 0, 'the loss was noticed');
    for (const failure of failures) {
      assert.equal(
        failure.code,
        UNAVAILABLE,
        `every failed answer is UNAVAILABLE, got ${failure.code}: ${failure.details}`,
      );
    }
    const firstOk = traffic.answers.find(answer => answer.at > backAt && answer.code === 0);
    assert.ok(firstOk !== undefined && firstOk.at - backAt <= RECOVERY_BOUND_MS);
    // A backoff between attempts: a handful of them, not one per failed call.
    const attempts = recoveries() - attemptsBefore;
    assert.ok(
      attempts >= 1 && attempts <= 8,
      `${attempts} recovery attempts for ${failures.length} failures`,
    );
    assert.ok(log.records().some(record => record.msg === 'HSM connection recovered'));

    for (const item of sealed) assert.deepEqual(await decryptOne(client, item), item.seed);
    await until(
      async () => (await client.status()).healthz,
      healthz => healthz === 'ok',
      'healthz ok',
      RECOVERY_BOUND_MS,
    );
  });

  it('recovers with no call arriving: the probes drive it', async () => {
    const probes = () => log.records().filter(record => record.msg === 'HSM connection not recovered').length;
    const failedBefore = probes();
    const recoveredBefore = log.records().filter(record => record.msg === 'HSM connection recovered').length;
    await loseStorage(() => probes() > failedBefore);
    await until(
      async () => (await client.status()).healthz,
      healthz => healthz === 'ok',
      'healthz ok with no KMS call',
      RECOVERY_BOUND_MS,
    );
    assert.equal(
      log.records().filter(record => record.msg === 'HSM connection recovered').length,
      recoveredBefore + 1,
    );
    for (const item of sealed) assert.deepEqual(await decryptOne(client, item), item.seed);
  });
});
