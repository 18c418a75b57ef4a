// The crypto threads on a real SoftHSM token: a call runs the same on a thread as in the
// calling thread, the token's errors come back by their CKR_ names, a call waiting for a
// thread keeps its deadline, a network HSM's round trips leave the event loop free, and a
// thread that dies fails its call instead of hanging it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { loadModule, type LoadedModule } from '../../src/backends/pkcs11/module-cache.ts';
import { ckrName } from '../../src/backends/pkcs11/pkcs11-errors.ts';
import { performCipher, type CipherCall } from '../../src/backends/pkcs11/threads/cipher-call.ts';
import { CryptoThreads } from '../../src/backends/pkcs11/threads/crypto-threads.ts';
import { gcmParams } from '../../src/backends/pkcs11/mechanisms/gcm-params.ts';
import { createToken, SOFTHSM_MODULE, type SoftHsmToken } from '../helpers/softhsm.ts';

const DYING_WORKER = new URL('../helpers/dying-crypto-worker.ts', import.meta.url);
const SHIM = new URL('../../.cache/pkcs11-shim/libkms-broker-shim.so', import.meta.url).pathname;
const never = new AbortController().signal;

describe('PKCS#11 crypto threads on SoftHSM', () => {
  let token: SoftHsmToken;
  let library: LoadedModule;
  let session: graphene.Session;
  let key: graphene.Key;
  let threads: CryptoThreads;

  const gcm = (direction: 'encrypt' | 'decrypt', iv: Buffer, input: Buffer, aad = Buffer.from('header')) =>
    ({
      direction,
      session: session.handle,
      key: key.handle,
      mechanism: pkcs11js.CKM_AES_GCM,
      params: gcmParams(iv, aad),
      input,
      outputBytes: input.length + 16,
    }) satisfies CipherCall;

  const slotOf = (module: graphene.Module) => {
    const slots = module.getSlots(true);
    return Array.from({ length: slots.length }, (_, index) => slots.items(index)).find(
      candidate => candidate.getToken().label.trim() === token.label,
    ) as graphene.Slot;
  };
  const aesKey = (on: graphene.Session) =>
    on.generateKey(graphene.KeyGenMechanism.AES, {
      keyType: graphene.KeyType.AES,
      valueLen: 32,
      token: false,
      encrypt: true,
      decrypt: true,
    });

  before(() => {
    execFileSync('bash', [new URL('../../scripts/build-pkcs11-shim.sh', import.meta.url).pathname], {
      stdio: 'pipe',
    });
    token = createToken();
    process.env.SOFTHSM2_CONF = token.conf;
    library = loadModule(SOFTHSM_MODULE);
    session = slotOf(library.module).open(
      graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION,
    );
    session.login(readFileSync(token.pinFile, 'utf8').trim(), graphene.UserType.USER);
    key = aesKey(session);
    threads = new CryptoThreads(SOFTHSM_MODULE, 2);
  });

  after(() => {
    threads.close();
    session.close();
    library.release();
    token.remove();
  });

  it('seals on a thread exactly as in this thread, and each opens the other', async () => {
    const iv = randomBytes(12);
    const seed = randomBytes(32);
    const onThread = await threads.run(gcm('encrypt', iv, seed), never);
    const here = performCipher(session.lib, gcm('encrypt', iv, seed));
    assert.equal(onThread.output.length, 48);
    assert.deepEqual(onThread.output, here.output);
    assert.deepEqual((await threads.run(gcm('decrypt', iv, here.output), never)).output, seed);
    assert.deepEqual(performCipher(session.lib, gcm('decrypt', iv, onThread.output)).output, seed);
  });

  it('reports the token error of a call by the same CKR_ name as this thread does', async () => {
    const iv = randomBytes(12);
    const sealed = (await threads.run(gcm('encrypt', iv, randomBytes(32)), never)).output;
    const otherHeader = gcm('decrypt', iv, sealed, Buffer.from('another header'));
    const local = (() => {
      try {
        performCipher(session.lib, otherHeader);
        return undefined;
      } catch (error) {
        return ckrName(error);
      }
    })();
    assert.ok(local?.startsWith('CKR_'), `SoftHSM refuses a wrong AAD here (${String(local)})`);
    await assert.rejects(threads.run(otherHeader, never), (error: Error) => ckrName(error) === local);
    const stale = { ...gcm('encrypt', iv, randomBytes(32)), key: Buffer.alloc(8, 0xff) };
    await assert.rejects(threads.run(stale, never), (error: Error) =>
      /^CKR_\w+HANDLE_INVALID/.test(error.message),
    );
    // The threads serve on after failures.
    const seed = randomBytes(32);
    const again = await threads.run(gcm('encrypt', iv, seed), never);
    assert.deepEqual((await threads.run(gcm('decrypt', iv, again.output), never)).output, seed);
  });

  it('refuses a call too large for a lane with INVALID_REQUEST, before any thread sees it', async () => {
    await assert.rejects(threads.run(gcm('encrypt', randomBytes(12), Buffer.alloc(64 * 1024)), never), {
      code: 'INVALID_REQUEST',
    });
    const seed = randomBytes(32);
    const iv = randomBytes(12);
    const sealed = await threads.run(gcm('encrypt', iv, seed), never);
    assert.deepEqual((await threads.run(gcm('decrypt', iv, sealed.output), never)).output, seed);
  });

  it('queues calls beyond its threads, and a queued call keeps its deadline', async () => {
    const one = new CryptoThreads(SOFTHSM_MODULE, 1);
    try {
      const gaveUp = new AbortController();
      const iv = randomBytes(12);
      const seeds = [randomBytes(32), randomBytes(32)];
      const first = one.run(gcm('encrypt', iv, seeds[0] as Buffer), never);
      // Queued behind the first: the thread's answer needs a turn of the event loop.
      const abandoned = one.run(gcm('encrypt', iv, randomBytes(32)), gaveUp.signal);
      const second = one.run(gcm('encrypt', iv, seeds[1] as Buffer), never);
      gaveUp.abort();
      await assert.rejects(abandoned, { code: 'DEADLINE_EXCEEDED' });
      const sealed = await Promise.all([first, second]);
      assert.equal(one.size, 1, 'never more threads than allowed');
      for (const [index, result] of sealed.entries())
        assert.deepEqual(performCipher(session.lib, gcm('decrypt', iv, result.output)).output, seeds[index]);
      const aborted = AbortSignal.abort();
      // A thread is free now: a call whose deadline already passed still waits for nothing.
      await assert.rejects(
        Promise.all([
          one.run(gcm('encrypt', iv, randomBytes(32)), never),
          one.run(gcm('encrypt', iv, randomBytes(32)), aborted),
        ]),
        { code: 'DEADLINE_EXCEEDED' },
      );
    } finally {
      one.close();
    }
  });

  it('starts new threads on restart (a module reset) and serves on them', async () => {
    threads.restart();
    const seed = randomBytes(32);
    const iv = randomBytes(12);
    const sealed = await Promise.all([1, 2, 3, 4].map(() => threads.run(gcm('encrypt', iv, seed), never)));
    for (const result of sealed) assert.deepEqual(result.output, sealed[0]?.output);
  });

  it('starts threads as calls need them, and keeps the event loop free while a network HSM answers', async () => {
    const latencyMs = 50;
    // The shim (a second copy of SoftHSM, loaded beside the real one) waits a round trip on
    // every session call; it reads its settings at C_Initialize.
    process.env.KMS_BROKER_SHIM_LATENCY_US = String(latencyMs * 1000);
    const shim = loadModule(SHIM, 4);
    delete process.env.KMS_BROKER_SHIM_LATENCY_US;
    const sessions: graphene.Session[] = [];
    try {
      const slot = slotOf(shim.module);
      const anchor = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
      sessions.push(anchor);
      anchor.login(readFileSync(token.pinFile, 'utf8').trim(), graphene.UserType.USER);
      const shimKey = aesKey(anchor);
      for (let index = 0; index < 4; index++)
        sessions.push(slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION));
      assert.equal(shim.threads.size, 0, 'no thread until a call needs one');
      let ticks = 0;
      let calling = true;
      const ticking = (async () => {
        for (let turn = 0; calling && turn < 10_000; turn++) {
          await delay(5);
          ticks++;
        }
      })();
      const started = performance.now();
      const iv = randomBytes(12);
      const seed = randomBytes(32);
      const results = await Promise.all(
        sessions
          .slice(1)
          .map(session =>
            shim.threads.run(
              { ...gcm('encrypt', iv, seed), session: session.handle, key: shimKey.handle },
              never,
            ),
          ),
      );
      const tookMs = performance.now() - started;
      calling = false;
      await ticking;
      for (const result of results) assert.deepEqual(result.output, results[0]?.output);
      assert.equal(shim.threads.size, 4, 'a thread for each call in flight, up to the most allowed');
      // Each call is two round trips (init, then encrypt), all of them off the event loop.
      assert.ok(tookMs >= 2 * latencyMs, `took ${tookMs} ms`);
      assert.ok(ticks >= 5, `the event loop ran ${ticks} timers in ${Math.round(tookMs)} ms`);
    } finally {
      for (const session of sessions) session.close();
      shim.release();
    }
  });

  it('fails a call whose thread dies with CKR_DEVICE_ERROR, and the next call too, without hanging', async () => {
    const dying = new CryptoThreads(SOFTHSM_MODULE, 1, DYING_WORKER);
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        await assert.rejects(
          dying.run(gcm('encrypt', randomBytes(12), randomBytes(32)), never),
          (error: Error) => {
            assert.equal(ckrName(error), 'CKR_DEVICE_ERROR');
            assert.match(error.message, /crypto thread stopped \(exit code 7\)/);
            return true;
          },
        );
      }
    } finally {
      dying.close();
    }
  });
});
