// `kms-broker hsm-probe` run as an operator runs it, on a real SoftHSM token and through the
// PKCS#11 shim (test/pkcs11-shim) that makes SoftHSM behave like a Luna in FIPS mode (token GCM
// IVs only, appended to the output) with a 16-session cap. The token must hold the same objects afterwards.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { parse as parseYaml } from 'yaml';
import { runTrials } from '../../src/backends/pkcs11/probe/mechanism-trials.ts';
import type { ProbeResult } from '../../src/backends/pkcs11/probe/probe.ts';
import { offeredMechanisms } from '../../src/backends/pkcs11/mechanisms/offered.ts';
import { validateConfig } from '../../src/config/load.ts';
import { runCli } from '../helpers/cli-run.ts';
import { createToken, SOFTHSM_MODULE, type SoftHsmToken } from '../helpers/softhsm.ts';

const root = new URL('../..', import.meta.url).pathname;
const SHIM = join(root, '.cache/pkcs11-shim/libkms-broker-shim.so');
const KEY_LABEL = 'kms-broker-kek';
const WRONG_PIN = 'wrong-pin-5f1e9a';

let token: SoftHsmToken;
let pin: string;

/** Runs `action` on a logged-in session of a fresh library instance (no state cached between calls). */
function withSession<T>(action: (p11: pkcs11js.PKCS11, session: Buffer) => T): T {
  const saved = process.env.SOFTHSM2_CONF;
  process.env.SOFTHSM2_CONF = token.conf;
  const p11 = new pkcs11js.PKCS11();
  p11.load(SOFTHSM_MODULE);
  p11.C_Initialize();
  try {
    const slot = p11
      .C_GetSlotList(true)
      .find(candidate => p11.C_GetTokenInfo(candidate).label.trim() === token.label);
    assert.ok(slot);
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p11.C_Login(session, pkcs11js.CKU_USER, pin);
    return action(p11, session);
  } finally {
    p11.C_Finalize();
    p11.close();
    if (saved === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = saved;
  }
}

/** Labels of every object the token holds. */
function tokenObjects(): string[] {
  return withSession((p11, session) => {
    p11.C_FindObjectsInit(session, []);
    const handles = p11.C_FindObjects(session, 1000);
    p11.C_FindObjectsFinal(session);
    return handles
      .map(handle =>
        String(p11.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_LABEL }])[0]?.value),
      )
      .sort();
  });
}

/** A key the operator made before probing: the probe must find it and leave it alone. */
function createExistingKey(): void {
  withSession((p11, session) =>
    p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_LABEL, value: KEY_LABEL },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
    ]),
  );
}

function probe(args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  return runCli(['hsm-probe', '--token', token.label, '--pin-file', token.pinFile, ...args], {
    env: { ...token.env, ...env },
    timeoutMs: 60_000,
  });
}

const trial = (result: ProbeResult, mechanism: string, variant: Record<string, unknown> = {}) =>
  result.trials.find(
    candidate =>
      candidate.mechanism === mechanism &&
      Object.entries(variant).every(([key, value]) => candidate[key as keyof typeof candidate] === value),
  );

before(() => {
  execFileSync('bash', [join(root, 'scripts/build-pkcs11-shim.sh')], { stdio: 'pipe' });
  token = createToken('probe');
  pin = readFileSync(token.pinFile, 'utf8').trim();
  createExistingKey();
});
after(() => token.remove());

describe('kms-broker hsm-probe on SoftHSM', () => {
  it('reports the token, runs every trial and recommends aes-gcm, leaving the token as it was', async () => {
    const objectsBefore = tokenObjects();
    const run = await probe(['--module', SOFTHSM_MODULE]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^label\s+probe$/m);
    assert.match(run.stdout, /^manufacturer\s+SoftHSM project$/m);
    assert.match(run.stdout, /^max sessions\s+no cap \(0\)$/m);
    assert.match(run.stdout, /^0x1087\s+CKM_AES_GCM\s+encrypt,decrypt\s+16-32$/m);
    assert.match(run.stdout, /^host IV accepted\s+yes$/m);
    assert.match(run.stdout, /^token generates IV\s+no$/m);
    assert.match(run.stdout, /^aes-gcm\s+host IV\s+ok\s+[\d.]+ ms$/m);
    assert.match(run.stdout, /^aes-gcm-hsm-iv\s+token IV\s+refused\s+GCM_IV_NOT_GENERATED/m);
    assert.match(run.stdout, /^aes-kwp\s+CKM_AES_KEY_WRAP_PAD \(0x210a\)\s+ok/m);
    assert.match(run.stdout, /^rsa-oaep\s+sha256\s+refused\s+CKR_ARGUMENTS_BAD/m);
    assert.match(run.stdout, /^rsa-oaep\s+sha1\s+ok/m);
    assert.ok(!run.stdout.includes(pin), 'the PIN is never printed');

    // The block after RECOMMENDED is a config the broker accepts as it stands.
    const block = parseYaml(
      run.stdout.slice(run.stdout.indexOf('\n', run.stdout.indexOf('RECOMMENDED'))),
    ) as {
      backends: Record<string, unknown>[];
    };
    assert.deepEqual(block.backends[0], {
      name: 'hsm',
      type: 'pkcs11',
      module: SOFTHSM_MODULE,
      tokenLabel: 'probe',
      pinFile: token.pinFile,
      keyLabel: KEY_LABEL,
      mechanism: 'aes-gcm',
      sessions: 4,
    });
    validateConfig({
      socket: '/tmp/unused.sock',
      state: { path: '/tmp/unused.json' },
      backends: block.backends,
      failover: { order: ['hsm'] },
    });
    assert.deepEqual(tokenObjects(), objectsBefore, 'no object added or removed');
  });

  it('--json carries the same in one object, --all every mechanism', async () => {
    const objectsBefore = tokenObjects();
    const run = await probe([
      '--module',
      SOFTHSM_MODULE,
      '--json',
      '--key-label',
      'new-kek',
      '--name',
      'hsm-a',
    ]);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as ProbeResult;
    assert.equal(result.token.label, 'probe');
    assert.equal(result.token.sessions.cap, null);
    assert.equal(result.token.sessions.defaultPoolSize, 4);
    assert.ok(result.token.mechanisms.length > 20, 'every mechanism SoftHSM lists');
    assert.deepEqual(result.gcmIv, { hostIvAccepted: true, tokenGeneratesIv: false, tokenIvReturned: null });
    assert.equal(trial(result, 'aes-gcm')?.outcome, 'ok');
    assert.equal(trial(result, 'aes-kwp', { kwpMechanism: 0x210a })?.outcome, 'ok');
    assert.equal(trial(result, 'aes-kwp', { kwpMechanism: 0x210b })?.outcome, 'not-offered');
    assert.deepEqual(
      [
        trial(result, 'rsa-oaep', { oaepHash: 'sha256' })?.reason,
        trial(result, 'rsa-oaep', { oaepHash: 'sha1' })?.outcome,
      ],
      ['CKR_ARGUMENTS_BAD', 'ok'],
    );
    assert.equal(result.keyLabelFound, false);
    assert.equal(result.recommended?.backend.mechanism, 'aes-gcm');
    assert.equal(result.recommended?.backend.name, 'hsm-a');
    // No key labelled new-kek yet: the broker must create it, or it would not start.
    assert.equal(result.recommended?.backend.generateIfMissing, true);
    assert.ok(!run.stdout.includes(pin));
    assert.deepEqual(tokenObjects(), objectsBefore);

    const all = await probe(['--module', SOFTHSM_MODULE, '--all']);
    assert.match(all.stdout, /CKM_SHA256_HMAC/);
  });

  it('through the shim as a Luna in FIPS mode with a 16-session cap: token IVs appended, 16 sessions', async () => {
    const objectsBefore = tokenObjects();
    const shim = { KMS_BROKER_SHIM_GCM_IV: 'appended', KMS_BROKER_SHIM_MAX_SESSIONS: '16' };
    const run = await probe(['--module', SHIM], shim);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^max sessions\s+16$/m);
    assert.match(run.stdout, /^broker pool\s+at most 11 of the token's 16/m);
    assert.match(run.stdout, /^aes-gcm\s+host IV\s+refused\s+CKR_MECHANISM_PARAM_INVALID/m);
    assert.match(run.stdout, /^aes-gcm-hsm-iv\s+token IV \(appended\)\s+ok/m);
    assert.match(run.stdout, /^token IV returned\s+appended to the output$/m);
    assert.match(run.stdout, /likely FIPS mode/);
    assert.match(run.stdout, /^ {4}mechanism: aes-gcm-hsm-iv$/m);

    const json = JSON.parse((await probe(['--module', SHIM, '--json'], shim)).stdout) as ProbeResult;
    assert.deepEqual(
      [json.token.sessions.cap, json.token.sessions.brokerPoolLimit, json.token.sessions.defaultPoolSize],
      [16, 11, 4],
    );
    assert.deepEqual(json.gcmIv, {
      hostIvAccepted: false,
      tokenGeneratesIv: true,
      tokenIvReturned: 'appended',
    });
    assert.equal(json.recommended?.backend.mechanism, 'aes-gcm-hsm-iv');
    assert.deepEqual(tokenObjects(), objectsBefore);
  });

  it('a wrong PIN: HSM_LOGIN_FAILED, exit 1, never retried, never printed', async () => {
    const run = await runCli(
      ['hsm-probe', '--module', SOFTHSM_MODULE, '--token', token.label, '--pin-env', 'PROBE_PIN'],
      { env: { ...token.env, PROBE_PIN: WRONG_PIN }, timeoutMs: 60_000 },
    );
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^kms-broker: HSM_LOGIN_FAILED: .*CKR_PIN_INCORRECT.*not retrying/m);
    assert.ok(!`${run.stdout}${run.stderr}`.includes(WRONG_PIN), 'the PIN is never printed');
    // The right PIN still logs in: one failure, not a run of them.
    assert.equal((await probe(['--module', SOFTHSM_MODULE, '--json'])).code, 0);
  });

  it('a missing module or token names the option and the fix', async () => {
    const pinFile = join(token.dir, 'other-pin');
    writeFileSync(pinFile, pin, { mode: 0o600 });
    const noModule = await probe(['--module', '/nonexistent/libpkcs11.so']);
    assert.equal(noModule.code, 2);
    assert.match(noModule.stderr, /--module \/nonexistent\/libpkcs11\.so: no such file; give the path/);
    const noToken = await runCli(
      ['hsm-probe', '--module', SOFTHSM_MODULE, '--token', 'absent', '--pin-file', pinFile],
      { env: token.env },
    );
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /HSM_TOKEN_NOT_FOUND: no token matches --token absent .* 'probe' \(serial /);
    const twoTokens = await probe(['--module', SOFTHSM_MODULE, '--slot-id', '1']);
    assert.equal(twoTokens.code, 2);
    assert.match(twoTokens.stderr, /exactly one of --token <label>, --token-serial <serial> and --slot-id/);
  });

  it('destroys each trial key at once, after a refusal too, not only when the session closes', async () => {
    // In-process through the shim (host GCM IV refused), so that some trials fail; the probe's
    // session stays open while its objects are counted.
    const saved = { conf: process.env.SOFTHSM2_CONF, iv: process.env.KMS_BROKER_SHIM_GCM_IV };
    Object.assign(process.env, { SOFTHSM2_CONF: token.conf, KMS_BROKER_SHIM_GCM_IV: 'token' });
    const module = graphene.Module.load(SHIM);
    module.initialize();
    try {
      const slots = module.getSlots(true);
      const slot = Array.from({ length: slots.length }, (_, index) => slots.items(index)).find(
        candidate => candidate.getToken().label.trim() === token.label,
      );
      assert.ok(slot);
      const session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
      session.login(pin, graphene.UserType.USER);
      const objects = () => session.find({}).length;
      const before = objects();
      const trials = await runTrials(session, offeredMechanisms(slot));
      assert.ok(
        trials.some(result => result.outcome === 'refused'),
        'some trial failed',
      );
      assert.equal(objects(), before, 'no session object outlives its trial');
    } finally {
      module.finalize();
      for (const [name, value] of [
        ['SOFTHSM2_CONF', saved.conf],
        ['KMS_BROKER_SHIM_GCM_IV', saved.iv],
      ] as const)
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
    }
  });
});
