// Soak: at least 10,000 mixed Encrypt/Decrypt calls at concurrency 32 against an in-process
// broker with `wrap: all` over a real SoftHSM token and a real raft-backed OpenBao, while
// faults land at random from a seeded PRNG (SOAK_SEED to replay one): OpenBao killed and
// restarted, sealed and unsealed, the HSM failing (a switch around the real PKCS#11 backend:
// SoftHSM lives inside the broker and cannot be unplugged from outside), and both at once.
//
// Every envelope the broker ever returned is recorded. Afterwards, with both sides up, each
// must decrypt to its seed; with only the HSM up, each that carries an HSM wrap; with only
// OpenBao up, each that carries a Transit wrap. None may be lost. Calls may fail only inside a
// fault window (plus the budget of a call in flight when it ended), only as UNAVAILABLE or
// DEADLINE_EXCEEDED answered by the broker itself, and never with a wrong plaintext.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient } from '../helpers/admin-http.ts';
import {
  decryptOne,
  defer,
  pause,
  seededRandom,
  startFailoverApp,
  startTransitServer,
  underReplicatedTotal,
  until,
  wrapsOf,
  writeFailoverConfig,
  type Sealed,
} from '../helpers/fault-injection.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const SEED = Number(process.env.SOAK_SEED ?? 20261122);
const TARGET_CALLS = 10_000;
const CONCURRENCY = 32;
const FAULTS = 10;
/** Traffic stops here even if the target was not reached (the test then fails on the count). */
const MAX_TRAFFIC_MS = 150_000;
const MAX_CALLS = 60_000;
const CALL_MS = 2500;
const CLIENT_TIMEOUT_MS = 10_000;
/**
 * A call that fails just after a fault ended is still counted to it (breakers and pooled
 * connections settle); the test reports how late the latest such failure came.
 */
const WINDOW_GRACE_MS = 1000;

type FaultKind = 'kill' | 'seal' | 'hsm' | 'both';
const KINDS: readonly FaultKind[] = ['kill', 'seal', 'hsm', 'both'];
/** The sides each fault takes down. */
const DOWN: Readonly<Record<FaultKind, readonly string[]>> = {
  kill: ['vault'],
  seal: ['vault'],
  hsm: ['hsm'],
  both: ['hsm', 'vault'],
};

interface Window {
  readonly kind: FaultKind;
  readonly start: number;
  end: number;
}

interface Failure {
  readonly op: 'encrypt' | 'decrypt';
  /** The sides the call needed down to fail: both for an Encrypt, the envelope's wraps for a Decrypt. */
  readonly needs: readonly string[];
  readonly start: number;
  readonly end: number;
  readonly code: number | undefined;
  readonly details: string;
}

describe('failover soak', () => {
  let hsmToken: SoftHsmToken;

  before(() => {
    hsmToken = createToken();
    process.env.SOFTHSM2_CONF = hsmToken.conf;
  });

  after(() => hsmToken.remove());

  it(`survives ${TARGET_CALLS}+ calls at concurrency ${CONCURRENCY} under ${FAULTS} random faults, losing nothing`, async t => {
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, {
      keyLabel: 'kek-soak',
      callMs: CALL_MS,
      logLevel: 'warn',
    });
    const { hsm } = await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const admin = adminClient(config.adminSocket);
    // Whatever happens, the HSM switch is off and OpenBao runs when clean-ups start.
    defer(t, () => hsm.recover());

    const random = seededRandom(SEED);
    const opRandom = seededRandom(SEED ^ 0x9e3779b9);
    const recorded: Sealed[] = [];
    const failures: Failure[] = [];
    const wrong: string[] = [];
    const windows: Window[] = [];
    let calls = 0;
    let encrypts = 0;
    let slowestMs = 0;
    let faultsDone = false;
    const trafficStart = Date.now();

    // ---- traffic: CONCURRENCY workers, bounded in calls and time
    const worker = async () => {
      while (
        calls < MAX_CALLS &&
        Date.now() - trafficStart < MAX_TRAFFIC_MS &&
        !(faultsDone && calls >= TARGET_CALLS)
      ) {
        calls++;
        const encrypt = recorded.length === 0 || opRandom() < 0.5;
        const start = Date.now();
        let needs = ['hsm', 'vault'];
        try {
          if (encrypt) {
            encrypts++;
            const seed = randomBytes(32);
            const response = await client.encrypt(seed);
            recorded.push({
              seed,
              ciphertext: response.ciphertext,
              keyId: response.key_id,
              annotations: response.annotations,
            });
          } else {
            const sealed = recorded[Math.floor(opRandom() * recorded.length)];
            assert.ok(sealed);
            needs = wrapsOf(sealed);
            const plaintext = await decryptOne(client, sealed);
            if (!plaintext.equals(sealed.seed)) wrong.push(`call ${calls}: another seed`);
          }
        } catch (error) {
          const { code, details } = error as { code?: number; details?: string };
          failures.push({
            op: encrypt ? 'encrypt' : 'decrypt',
            needs,
            start,
            end: Date.now(),
            code,
            details: details ?? String(error),
          });
        }
        slowestMs = Math.max(slowestMs, Date.now() - start);
      }
    };
    const traffic = Promise.all(Array.from({ length: CONCURRENCY }, () => worker()));

    // ---- faults: the first four are each kind once (seeded order), the rest random
    const kinds = [...KINDS];
    for (let i = kinds.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [kinds[i], kinds[j]] = [kinds[j] as FaultKind, kinds[i] as FaultKind];
    }
    while (kinds.length < FAULTS) kinds.push(KINDS[Math.floor(random() * KINDS.length)] ?? 'hsm');
    const faultLog: string[] = [];
    try {
      await pause(500 + random() * 1000); // some traffic first
      for (const kind of kinds) {
        const holdMs = Math.round(400 + random() * 1600);
        const gapMs = Math.round(300 + random() * 1200);
        const hsmFirst = random() < 0.5;
        const window: Window = { kind, start: Date.now(), end: Infinity };
        windows.push(window);
        if (kind === 'hsm' || kind === 'both') hsm.fail();
        if (kind === 'kill' || kind === 'both') await server.kill();
        if (kind === 'seal') await server.seal();
        await pause(holdMs);
        if (kind === 'seal') await server.unseal();
        if (kind === 'hsm') hsm.recover();
        if (kind === 'kill') await server.restart();
        if (kind === 'both') {
          if (hsmFirst) hsm.recover();
          await server.restart();
          hsm.recover();
        }
        window.end = Date.now();
        faultLog.push(`${kind}:${window.end - window.start}ms@${calls}`);
        await pause(gapMs);
      }
    } finally {
      faultsDone = true;
      hsm.recover();
      if (!server.running) await server.restart();
    }
    await traffic;
    const trafficMs = Date.now() - trafficStart;
    t.diagnostic(`faults (kind:duration@calls): ${faultLog.join(' ')}`);

    // ---- what the traffic saw
    // A failure is explained when every side it needed was down in a fault overlapping the call.
    const explained = (failure: Failure) => {
      const down = new Set(
        windows
          .filter(window => failure.start <= window.end + WINDOW_GRACE_MS && failure.end >= window.start)
          .flatMap(window => DOWN[window.kind]),
      );
      return failure.needs.every(side => down.has(side));
    };
    const lateMs = Math.max(
      0,
      ...failures.map(failure => {
        const ended = windows.filter(window => window.end <= failure.start).map(window => window.end);
        const inside = windows.some(window => failure.start <= window.end && failure.end >= window.start);
        return inside || ended.length === 0 ? 0 : failure.start - Math.max(...ended);
      }),
    );
    const badCode = failures.filter(
      failure =>
        !(failure.code === GrpcStatus.UNAVAILABLE || failure.code === GrpcStatus.DEADLINE_EXCEEDED) ||
        !/^(BACKEND_UNAVAILABLE|DEADLINE_EXCEEDED): /.test(failure.details),
    );
    const unexplained = failures.filter(failure => !explained(failure));
    const wrapSets = new Map<string, number>();
    for (const sealed of recorded) {
      const wraps = wrapsOf(sealed);
      assert.ok(
        wraps.length >= 1 && wraps.length <= 2 && new Set(wraps).size === wraps.length,
        `envelope with wraps ${wraps.join(',')}`,
      );
      assert.ok(wraps.every(wrap => wrap === 'hsm' || wrap === 'vault'));
      const key = wraps.join('+');
      wrapSets.set(key, (wrapSets.get(key) ?? 0) + 1);
    }
    const underReplicated = recorded.filter(sealed => wrapsOf(sealed).length < 2).length;
    const counted = await underReplicatedTotal(admin);
    const failuresByKind = new Map<string, number>();
    for (const failure of failures) {
      const kind = `${failure.op}:${failure.details.split(':')[0] ?? '?'}`;
      failuresByKind.set(kind, (failuresByKind.get(kind) ?? 0) + 1);
    }
    t.diagnostic(
      `traffic: ${calls} calls in ${trafficMs} ms (${encrypts} encrypts), slowest ${slowestMs} ms, ` +
        `envelopes ${JSON.stringify(Object.fromEntries(wrapSets))}, key_ids ${new Set(recorded.map(s => s.keyId)).size}, ` +
        `failures ${JSON.stringify(Object.fromEntries(failuresByKind))} (latest ${lateMs} ms after a fault ended), ` +
        `metric under-replicated ${counted}`,
    );

    // ---- afterwards: every envelope, with both up, then with each side alone
    const decryptEach = async (items: readonly Sealed[], label: string): Promise<string[]> => {
      const lost: string[] = [];
      let next = 0;
      const drain = async () => {
        for (let index = next++; index < items.length; index = next++) {
          const sealed = items[index];
          assert.ok(sealed);
          try {
            const plaintext = await decryptOne(client, sealed);
            if (!plaintext.equals(sealed.seed)) lost.push(`${label} #${index}: another seed`);
          } catch (error) {
            const { code, details } = error as { code?: number; details?: string };
            lost.push(`${label} #${index} (${wrapsOf(sealed).join('+')}): ${code} ${details}`);
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, () => drain()));
      return lost;
    };
    await until(
      () => client.status(),
      status => status.healthz === 'ok',
      'Status ok with both up',
    );
    const lostBoth = await decryptEach(recorded, 'both up');
    const withHsm = recorded.filter(sealed => wrapsOf(sealed).includes('hsm'));
    const withVault = recorded.filter(sealed => wrapsOf(sealed).includes('vault'));
    await server.kill();
    const lostHsmOnly = await decryptEach(withHsm, 'only the HSM up');
    await server.restart();
    hsm.fail();
    const lostVaultOnly = await decryptEach(withVault, 'only OpenBao up');
    hsm.recover();
    const lost = [...lostBoth, ...lostHsmOnly, ...lostVaultOnly];

    const summary =
      `soak: calls=${calls}, faults=${windows.length}, under-replicated=${underReplicated}, ` +
      `caller-failures=${failures.length}, lost=${lost.length}`;
    console.log(`# ${summary}`);
    t.diagnostic(
      `${summary} (seed ${SEED}; verified ${recorded.length} + ${withHsm.length} + ${withVault.length})`,
    );

    assert.deepEqual(lost.slice(0, 10), [], `${lost.length} envelopes lost`);
    assert.deepEqual(wrong, [], 'a Decrypt answered with another seed');
    assert.deepEqual(
      badCode.slice(0, 10),
      [],
      `${badCode.length} failures were not UNAVAILABLE/DEADLINE_EXCEEDED`,
    );
    assert.deepEqual(
      unexplained.slice(0, 10),
      [],
      `${unexplained.length} calls failed while a side they needed was up (not explained by a fault)`,
    );
    assert.ok(calls >= TARGET_CALLS, `only ${calls} calls within ${MAX_TRAFFIC_MS} ms`);
    assert.equal(windows.length, FAULTS);
    assert.ok(slowestMs < CALL_MS + 1500, `a call took ${slowestMs} ms`);
    assert.ok(
      counted >= underReplicated,
      `metric ${counted} < ${underReplicated} under-replicated envelopes seen`,
    );
    assert.ok(underReplicated > 0, 'faults produced under-replicated envelopes');
  });
});
