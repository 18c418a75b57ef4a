// The broker's files as a careless operator leaves them: a state path that is a symlink
// into another folder, a state file damaged by hand while the broker runs, secret files
// every user may read. Real SoftHSM, real processes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, stopAllBrokers } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig } from '../helpers/config.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

interface StoredState {
  readonly backends: Record<string, { writeVersion: string; versions: { version: string; state: string }[] }>;
}

async function keyIdAndRoundTrip(socket: string): Promise<string> {
  const client = createKmsV2Client(socket);
  try {
    const seed = randomBytes(32);
    const encrypted = await client.encrypt(seed);
    const { plaintext } = await client.decrypt({
      ciphertext: encrypted.ciphertext,
      key_id: encrypted.key_id,
    });
    assert.deepEqual(plaintext, seed);
    return encrypted.key_id;
  } finally {
    client.close();
  }
}

function metric(text: string, name: string): number {
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
}

describe("the broker's files on the host", () => {
  let token: SoftHsmToken;

  before(() => {
    token = createToken();
  });
  afterEach(stopAllBrokers);
  after(() => token.remove());

  it('writes a rotation and a retirement through a symlinked state path, and both survive a restart', async () => {
    const base = writeConfig(token);
    const volume = join(base.dir, 'volume');
    mkdirSync(volume, { mode: 0o700 });
    const statePath = join(base.dir, 'state-link.json');
    symlinkSync(join(volume, 'state.json'), statePath);
    const config = writeConfig(
      token,
      { backends: [pkcs11Backend(token, { keyLabel: 'linked' })], state: { path: statePath } },
      base.dir,
    );
    const admin = adminClient(config.adminSocket);
    const first = await startBrokerProcess(config.path, token.env);
    await first.waitForLog(record => record.msg === 'admin API listening');
    const rotated = await admin.post('/v1/backends/hsm/rotate', config.adminToken);
    assert.equal(rotated.status, 200, rotated.text);
    const retired = await admin.post('/v1/backends/hsm/versions/1/retire?force=true', config.adminToken);
    assert.equal(retired.status, 200, retired.text);
    const keyId = await keyIdAndRoundTrip(config.socket);
    assert.equal(await first.stop(), 0);

    assert.ok(lstatSync(statePath).isSymbolicLink(), 'the link was replaced by a regular file');
    const second = await startBrokerProcess(config.path, token.env);
    try {
      assert.equal(await keyIdAndRoundTrip(config.socket), keyId);
      const stored = JSON.parse(readFileSync(join(volume, 'state.json'), 'utf8')) as StoredState;
      assert.equal(stored.backends.hsm?.writeVersion, '2');
      assert.deepEqual(
        stored.backends.hsm?.versions.map(version => [version.version, version.state]),
        [
          ['1', 'retired'],
          ['2', 'active'],
        ],
      );
    } finally {
      await second.stop();
    }
  });

  it('never overwrites a state file damaged while it runs: refuses the change, counts it, keeps serving', async () => {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, { keyLabel: 'damaged' })] });
    const admin = adminClient(config.adminSocket);
    const broker = await startBrokerProcess(config.path, token.env);
    await broker.waitForLog(record => record.msg === 'admin API listening');
    try {
      const keyId = await keyIdAndRoundTrip(config.socket);
      const garbage = '{"format": 1, "generation": 0, "backends": {"hsm": ';
      writeFileSync(config.statePath, garbage);
      await broker.waitForLog(record => record.msg === 'state reload failed; keeping the current key set');
      const rotated = await admin.post('/v1/backends/hsm/rotate', config.adminToken);
      assert.equal(rotated.status, 503, rotated.text);
      assert.match(rotated.text, /STATE_WRITE_FAILED/);
      assert.match(
        rotated.text,
        /state file \S+ was changed by another writer and no longer holds valid state; not overwriting it: restore it from a backup, or move it away/,
      );
      assert.equal(readFileSync(config.statePath, 'utf8'), garbage);
      const metrics = await admin.get('/metrics', config.adminToken);
      assert.equal(metric(metrics.text, 'kms_broker_state_write_failures_total'), 1);
      assert.equal(await keyIdAndRoundTrip(config.socket), keyId, 'serving from memory, key_id unchanged');
    } finally {
      await broker.stop();
    }
  });

  it('warns once per secret file every user may read, naming its key and path, never its contents', async () => {
    const config = writeConfig(token);
    chmodSync(join(config.dir, 'admin-token'), 0o644);
    chmodSync(token.pinFile, 0o604);
    const broker = await startBrokerProcess(config.path, token.env);
    try {
      const warnings = broker.logs.filter(
        record => record.msg === 'secret file is readable by every user of this host; chmod o-rwx it',
      );
      assert.deepEqual(
        warnings.map(record => [record.key, record.path, record.mode]),
        [
          ['admin.tokens[0].file', join(config.dir, 'admin-token'), '0644'],
          ['backends[0].pinFile', token.pinFile, '0604'],
        ],
      );
      const output = JSON.stringify(broker.logs) + broker.text.join('\n');
      assert.ok(!output.includes(config.adminToken), 'the admin token was logged');
      assert.ok(!output.includes(readFileSync(token.pinFile, 'utf8').trim()), 'the PIN was logged');
    } finally {
      await broker.stop();
      chmodSync(token.pinFile, 0o600);
    }
  });
});
