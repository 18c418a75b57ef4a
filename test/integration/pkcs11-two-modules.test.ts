// Two PKCS#11 backends on two different modules in one broker process, as during a migration
// from one HSM vendor to another: `hsm-a` on SoftHSM's own library, `hsm-b` on a copy of the
// test shim at another path (its own SoftHSM instance, with a YubiHSM-like session cap and a
// serial of its own), with `failover.wrap: all`. Then the migration ends: the broker restarts
// with hsm-b alone and still reads what was written under both.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { decodeEnvelope, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import type { EncryptResponse } from '../../src/grpc/proto.ts';
import { adminClient, type AdminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type BrokerProcess, type LogRecord } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const root = new URL('../..', import.meta.url).pathname;
const HSM_B_WRAP = `hsm-b${WRAP_ANNOTATION_SUFFIX}`;
/** Reported by the shim's module only: a key fingerprint carrying it was made through that module. */
const SHIM_SERIAL = 'shim-hsm-b-0001';
/** Configured on both backends; the shim's token allows 4 sessions, SoftHSM's states no cap. */
const SESSIONS = 8;

interface StoredState {
  backends: Record<string, { writeVersion: string; versions: { version: string; fingerprint: string }[] }>;
}

interface BackendView {
  name: string;
  type: string;
  healthy: boolean;
  breaker: string;
  writeVersion?: string;
}

/** The serial SoftHSM itself reports for the token labelled `label` (not through the shim). */
function softHsmSerial(token: SoftHsmToken, label: string): string {
  const slots = execFileSync('softhsm2-util', ['--show-slots'], { env: token.env, encoding: 'utf8' });
  const block = slots
    .split(/^Slot /m)
    .find(slot => new RegExp(`^\\s*Label:\\s+${label}\\s*$`, 'm').test(slot));
  const serial = block?.match(/^\s*Serial number:\s+(\S+)\s*$/m)?.[1];
  assert.ok(serial, `softhsm2-util lists token ${label} with a serial`);
  return serial;
}

/** Each wrap an Encrypt returned, by the backend and version its header names. */
function wrapsOf(sealed: EncryptResponse): { backend: string; keyVersion: string; wrap: Buffer }[] {
  const wraps = [sealed.ciphertext, ...Object.values(sealed.annotations)];
  return wraps.map(wrap => ({ ...decodeEnvelope(wrap).header, wrap }));
}

describe('two PKCS#11 backends on two modules in one broker (a migration between HSMs)', () => {
  let token: SoftHsmToken;
  let hsmB: string;
  let env: NodeJS.ProcessEnv;
  let config: TestConfig;
  /** The config folder (admin tokens, state, socket), kept across the restart. */
  let folder: string | undefined;
  let broker: BrokerProcess;
  let client: KmsV2Client;
  let admin: AdminClient;
  const written: { seed: Buffer; sealed: EncryptResponse }[] = [];

  const state = () => JSON.parse(readFileSync(config.statePath, 'utf8')) as StoredState;
  const fingerprints = (name: string) => state().backends[name]?.versions.map(v => v.fingerprint) ?? [];
  const backends = async (): Promise<BackendView[]> => {
    const response = await admin.get('/v1/backends', config.viewerToken);
    assert.equal(response.status, 200, response.text);
    return (response.body as { backends: BackendView[] }).backends;
  };
  const seal = async () => {
    const seed = randomBytes(32);
    const sealed = await client.encrypt(seed);
    written.push({ seed, sealed });
    return { seed, sealed };
  };
  const start = async (backendList: Record<string, unknown>[], order: string[]) => {
    config = writeConfig(
      undefined,
      { backends: backendList, failover: { order, wrap: 'all' } },
      folder, // the restart keeps the folder, and so the state file
    );
    folder = config.dir;
    broker = await startBrokerProcess(config.path, env);
    client = createKmsV2Client(config.socket);
    admin = adminClient(config.adminSocket);
  };
  const stop = async () => {
    client.close();
    return broker.stop();
  };
  const hsmBBackend = () =>
    pkcs11Backend(token, {
      name: 'hsm-b',
      module: hsmB,
      tokenLabel: 'hsm-b',
      pinFile: join(token.dir, 'pin-b'),
      sessions: SESSIONS,
    });

  before(async () => {
    execFileSync('bash', [join(root, 'scripts/build-pkcs11-shim.sh')], { stdio: 'pipe' });
    token = createToken('hsm-a');
    const pinB = randomBytes(8).toString('hex');
    addToken(token, 'hsm-b', pinB);
    writeFileSync(join(token.dir, 'pin-b'), pinB, { mode: 0o600 });
    // A copy at another path is another module: its own SoftHSM instance, model "hsm-b".
    hsmB = join(token.dir, 'libhsm-b.so');
    copyFileSync(join(root, '.cache/pkcs11-shim/libkms-broker-shim.so'), hsmB);
    // Read by the shim module only; SoftHSM's own library knows nothing of them.
    env = { ...token.env, KMS_BROKER_SHIM_MAX_SESSIONS: '4', KMS_BROKER_SHIM_SERIAL: SHIM_SERIAL };
    await start(
      [pkcs11Backend(token, { name: 'hsm-a', tokenLabel: 'hsm-a', sessions: SESSIONS }), hsmBBackend()],
      ['hsm-a', 'hsm-b'],
    );
  });

  after(async () => {
    try {
      await stop();
    } finally {
      token.remove();
      if (folder !== undefined) rmSync(folder, { recursive: true, force: true });
    }
  });

  it('wraps each seed on both modules, and both show healthy with keys on their own tokens', async () => {
    const { seed, sealed } = await seal();
    assert.deepEqual(Object.keys(sealed.annotations), [HSM_B_WRAP]);
    assert.deepEqual(
      wrapsOf(sealed).map(({ backend, keyVersion }) => [backend, keyVersion]),
      [
        ['hsm-a', '1'],
        ['hsm-b', '1'],
      ],
    );
    const read = await client.decrypt({ ...sealed, key_id: sealed.key_id });
    assert.deepEqual(read.plaintext, seed);

    const views = await backends();
    assert.deepEqual(
      views.map(({ name, type, healthy, breaker, writeVersion }) => [
        name,
        type,
        healthy,
        breaker,
        writeVersion,
      ]),
      [
        ['hsm-a', 'pkcs11', true, 'closed', '1'],
        ['hsm-b', 'pkcs11', true, 'closed', '1'],
      ],
    );
    // The admin API names no module; the key fingerprints (pkcs11:<token serial>:<CKA_ID>) do:
    // hsm-a's key sits on the token SoftHSM itself reports, hsm-b's behind the shim module.
    const [a] = fingerprints('hsm-a');
    const [b] = fingerprints('hsm-b');
    assert.match(a ?? '', new RegExp(`^pkcs11:${softHsmSerial(token, 'hsm-a')}:[0-9a-f]{32}$`));
    assert.match(b ?? '', new RegExp(`^pkcs11:${SHIM_SERIAL}:[0-9a-f]{32}$`));
  });

  it('lowers the pool for the capped module only, and concurrent calls then fit its cap', async () => {
    const lowered = (record: LogRecord) => record.tokenCap !== undefined;
    assert.deepEqual(
      broker.logs
        .filter(lowered)
        .map(({ level, backend, configured, tokenCap, sessions }) => [
          level,
          backend,
          configured,
          tokenCap,
          sessions,
        ]),
      [['warn', 'hsm-b', SESSIONS, 4, 2]],
    );
    // More calls at once than hsm-b's cap: with its pool at the configured 8, the shim would
    // refuse the 4th session (CKR_SESSION_COUNT) and envelopes would lack hsm-b's wrap.
    const sealed = await Promise.all(Array.from({ length: 12 }, () => client.encrypt(randomBytes(32))));
    for (const one of sealed) assert.deepEqual(Object.keys(one.annotations), [HSM_B_WRAP]);
    assert.equal(broker.logs.filter(record => record.msg === 'envelope is under-replicated').length, 0);
    assert.equal(broker.logs.filter(record => record.msg === 'recovering HSM connection').length, 0);
  });

  it('decrypts with either module alone', async () => {
    const { seed, sealed } = await seal();
    // Each wrap is a whole envelope: sent alone, only its own backend can open it.
    for (const { backend, wrap } of wrapsOf(sealed)) {
      const read = await client.decrypt({ ciphertext: wrap, annotations: {}, key_id: sealed.key_id });
      assert.deepEqual(read.plaintext, seed, backend);
    }
  });

  it('rotates hsm-b alone: hsm-a keeps its version, and old and new data read', async () => {
    const before = { a: fingerprints('hsm-a'), b: fingerprints('hsm-b') };
    const keyIdBefore = (await client.status()).key_id;
    const rotated = await admin.request('/v1/backends/hsm-b/rotate', {
      method: 'POST',
      token: config.adminToken,
    });
    assert.equal(rotated.status, 200, rotated.text);
    const result = rotated.body as { backend: string; version: string; keyId: string };
    assert.deepEqual([result.backend, result.version], ['hsm-b', '2']);
    assert.notEqual(result.keyId, keyIdBefore);

    assert.deepEqual(fingerprints('hsm-a'), before.a, 'hsm-a: the same single key');
    const afterB = fingerprints('hsm-b');
    assert.equal(afterB.length, 2);
    assert.equal(afterB[0], before.b[0]);
    assert.match(afterB[1] ?? '', new RegExp(`^pkcs11:${SHIM_SERIAL}:`));
    assert.deepEqual(
      (await backends()).map(({ name, writeVersion }) => [name, writeVersion]),
      [
        ['hsm-a', '1'],
        ['hsm-b', '2'],
      ],
    );

    const { seed, sealed } = await seal();
    assert.equal(sealed.key_id, result.keyId);
    assert.deepEqual(
      wrapsOf(sealed).map(({ backend, keyVersion }) => [backend, keyVersion]),
      [
        ['hsm-a', '1'],
        ['hsm-b', '2'],
      ],
    );
    for (const { backend, wrap } of wrapsOf(sealed)) {
      const read = await client.decrypt({ ciphertext: wrap, annotations: {}, key_id: sealed.key_id });
      assert.deepEqual(read.plaintext, seed, backend);
    }
    for (const [index, old] of written.entries()) {
      const read = await client.decrypt({ ...old.sealed, key_id: old.sealed.key_id });
      assert.deepEqual(read.plaintext, old.seed, `seed ${index}`);
    }
  });

  it('after the old HSM is removed from the config, reads everything through hsm-b alone', async () => {
    // Both modules finalized cleanly: a clean exit, no crash at C_Finalize.
    assert.equal(await stop(), 0, broker.text.join('\n'));
    await start([hsmBBackend()], ['hsm-b']);

    // The apiserver hands the annotations back on Decrypt: hsm-b's wrap opens every seed,
    // those written before its rotation (version 1) and after (version 2).
    assert.ok(written.length >= 3);
    for (const [index, old] of written.entries()) {
      const read = await client.decrypt({ ...old.sealed, key_id: old.sealed.key_id });
      assert.deepEqual(read.plaintext, old.seed, `seed ${index}`);
    }
    // Without them only hsm-a's wrap is left, and it says which backend is missing.
    const [first] = written;
    assert.ok(first);
    await expectGrpcError(
      client.decrypt({ ciphertext: first.sealed.ciphertext, annotations: {}, key_id: first.sealed.key_id }),
      GrpcStatus.FAILED_PRECONDITION,
      /UNKNOWN_BACKEND: .*'hsm-a', which is not configured/,
    );

    // New writes: one wrap, by hsm-b, under a key_id of its own.
    const { seed, sealed } = await seal();
    assert.deepEqual(sealed.annotations, {});
    assert.deepEqual(
      wrapsOf(sealed).map(({ backend, keyVersion }) => [backend, keyVersion]),
      [['hsm-b', '2']],
    );
    assert.ok(written.every(old => old === written.at(-1) || old.sealed.key_id !== sealed.key_id));
    const read = await client.decrypt({ ...sealed, key_id: sealed.key_id });
    assert.deepEqual(read.plaintext, seed);
    assert.deepEqual(
      (await backends()).map(({ name, healthy }) => [name, healthy]),
      [['hsm-b', true]],
    );
  });
});
