// A broker whose config switches PKCS#11 mechanism across restarts, through the KMS v2 API:
// nothing written before is stranded. aes-gcm becomes aes-gcm-hsm-iv on a token that chooses
// GCM IVs itself (the test shim over SoftHSM, enforcing the rule of a Luna in FIPS mode)
// without a new key; rsa-oaep needs another kind of key, which start-up creates; and what start-up cannot
// mend (no key for the new mechanism, a mechanism the token lacks, a key that could leave the
// token) exits 4 with the fix named.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { spawnBroker, startBrokerProcess, stopAllBrokers } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { importAesKey } from '../helpers/pkcs11-keys.ts';
import { createToken, SOFTHSM_MODULE, type SoftHsmToken } from '../helpers/softhsm.ts';

const root = new URL('../..', import.meta.url).pathname;
const SHIM = join(root, '.cache/pkcs11-shim/libkms-broker-shim.so');

interface Written {
  readonly ciphertext: Buffer;
  readonly keyId: string;
  readonly plaintext: Buffer;
}

describe('switching the PKCS#11 mechanism of a running installation', () => {
  let token: SoftHsmToken;
  let dir: string;
  const written: Written[] = [];

  before(() => {
    execFileSync('bash', [join(root, 'scripts/build-pkcs11-shim.sh')], { stdio: 'pipe' });
    token = createToken();
  });
  afterEach(stopAllBrokers);
  after(() => token.remove());

  /** The same folder (state file, socket) every time: one installation, restarted. */
  function configWith(settings: Record<string, unknown>): TestConfig {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, settings)] }, dir);
    dir = config.dir;
    return config;
  }

  /** Serves `settings`, writes one secret, reads back everything written so far. */
  async function serve(settings: Record<string, unknown>, env: NodeJS.ProcessEnv = token.env) {
    const config = configWith(settings);
    const broker = await startBrokerProcess(config.path, env);
    const client = createKmsV2Client(config.socket, 10_000);
    try {
      const plaintext = randomBytes(32);
      const sealed = await client.encrypt(plaintext);
      written.push({ ciphertext: sealed.ciphertext, keyId: sealed.key_id, plaintext });
      for (const { ciphertext, keyId, plaintext: expected } of written) {
        const opened = await client.decrypt({ ciphertext, key_id: keyId });
        assert.deepEqual(opened.plaintext, expected);
      }
      return { envelope: decodeEnvelope(sealed.ciphertext), broker };
    } finally {
      client.close();
      await broker.stop();
    }
  }

  async function failedStart(
    settings: Record<string, unknown>,
  ): Promise<{ code: number | null; output: string }> {
    const broker = spawnBroker(configWith(settings).path, token.env);
    const code = await broker.exited;
    return { code, output: broker.text.join('\n') };
  }

  it('writes aes-gcm with the host IV on SoftHSM', async () => {
    const { envelope } = await serve({ mechanism: 'aes-gcm' });
    assert.equal(envelope.header.mechanism, 'aes-gcm');
    assert.equal(envelope.header.keyVersion, '1');
  });

  it('switches to aes-gcm-hsm-iv on a token that draws the IV (as a Luna in FIPS mode), with the same key', async () => {
    const env = { ...token.env, KMS_BROKER_SHIM_GCM_IV: 'appended' };
    const { envelope } = await serve({ module: SHIM, mechanism: 'aes-gcm-hsm-iv' }, env);
    assert.equal(envelope.header.mechanism, 'aes-gcm-hsm-iv');
    assert.equal(envelope.header.keyVersion, '1', 'an AES key serves both ways of getting the IV');
    // The shim refuses any IV from the host: the stored 16-byte IV is the token's own.
    assert.equal(envelope.wrapped[0], 16);
    assert.ok(envelope.wrapped.subarray(1, 17).some(byte => byte !== 0));
  });

  it('switches to rsa-oaep: start-up creates an RSA key version, the AES one still reads', async () => {
    const { envelope, broker } = await serve({ mechanism: 'rsa-oaep', oaepHash: 'sha1' });
    assert.equal(envelope.header.mechanism, 'rsa-oaep-sha1');
    assert.equal(envelope.header.keyVersion, '2');
    const switched = broker.logs.find(record =>
      String(record.msg).startsWith('the write key version was made for another'),
    );
    assert.equal(switched?.from, '1');
    assert.equal(switched?.to, '2');
    assert.notEqual(written[2]?.keyId, written[1]?.keyId, 'a new write key is a new key_id');
  });

  it('exits 4 naming the fix when the new mechanism has no key and may not create one', async () => {
    const { code, output } = await failedStart({ mechanism: 'aes-kwp', generateIfMissing: false });
    assert.equal(code, 4);
    assert.match(
      output,
      /KEY_MECHANISM_MISMATCH.*write key version 2 is an RSA key for decrypt, which cannot write with mechanism aes-kwp; set generateIfMissing: true/,
    );
  });

  it('exits 4 when the token does not offer the mechanism', async () => {
    const { code, output } = await failedStart({ mechanism: 'aes-kwp', kwpMechanism: 0x210b });
    assert.equal(code, 4);
    assert.match(output, /HSM_MECHANISM_UNSUPPORTED.*does not offer mechanism aes-kwp/);
  });

  it('exits 4 when a key an administrator imported could leave the token', async () => {
    importLeakyKey(token, 'kek-v3');
    const { code, output } = await failedStart({ mechanism: 'rsa-oaep', oaepHash: 'sha1' });
    assert.equal(code, 4);
    assert.match(output, /HSM_KEY_UNSAFE.*key 'kek-v3' .*could leave the token/);
  });
});

/** An extractable AES key given by value, as a careless import makes it. */
function importLeakyKey(token: SoftHsmToken, label: string): void {
  process.env.SOFTHSM2_CONF = token.conf;
  const module = graphene.Module.load(SOFTHSM_MODULE, 'test');
  module.initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slots = module.getSlots(true);
    let slot: graphene.Slot | undefined;
    for (let index = 0; index < slots.length; index++) {
      const candidate = slots.items(index);
      if (candidate.getToken().label.trim() === token.label) slot = candidate;
    }
    assert.ok(slot, 'the test token');
    const session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
    session.login(readFileSync(token.pinFile, 'utf8').trim());
    importAesKey(session, label, false);
    session.close();
  } finally {
    module.finalize();
  }
}
