// The broker process over its life: restarts, rotation, sockets, signals, bad PINs, and
// what it does with missing or damaged state. Real SoftHSM, real processes.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { CLI, spawnBroker, startBrokerProcess, stopAllBrokers } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig } from '../helpers/config.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const run = promisify(execFile);

async function encryptSome(socket: string, count: number) {
  const client = createKmsV2Client(socket);
  try {
    const seeds = Array.from({ length: count }, () => randomBytes(32));
    const encrypted = await Promise.all(seeds.map(seed => client.encrypt(seed)));
    return seeds.map((seed, i) => ({ seed, ...(encrypted[i] as (typeof encrypted)[number]) }));
  } finally {
    client.close();
  }
}

async function decryptAll(socket: string, items: Awaited<ReturnType<typeof encryptSome>>) {
  const client = createKmsV2Client(socket);
  try {
    for (const item of items) {
      const { plaintext } = await client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id });
      assert.deepEqual(plaintext, item.seed);
    }
  } finally {
    client.close();
  }
}

async function statusKeyId(socket: string): Promise<string> {
  const client = createKmsV2Client(socket);
  try {
    return (await client.status()).key_id;
  } finally {
    client.close();
  }
}

describe('broker lifecycle', () => {
  let token: SoftHsmToken;

  before(() => {
    token = createToken();
  });
  // Each test owns its brokers; one that fails half-way must not leave them running.
  afterEach(stopAllBrokers);
  after(() => token.remove());

  it('decrypts after a restart everything it encrypted before', async () => {
    const config = writeConfig(token);
    const first = await startBrokerProcess(config.path, token.env);
    const items = await encryptSome(config.socket, 20);
    const keyIdBefore = await statusKeyId(config.socket);
    assert.equal(await first.stop(), 0);
    const second = await startBrokerProcess(config.path, token.env);
    try {
      assert.equal(await statusKeyId(config.socket), keyIdBefore);
      await decryptAll(config.socket, items);
    } finally {
      await second.stop();
    }
  });

  it('rotates without a restart: key_id changes, new writes use the new version, old data still reads, also after a restart', async () => {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, { keyLabel: 'rot' })] });
    const broker = await startBrokerProcess(config.path, token.env);
    const before = await encryptSome(config.socket, 10);
    const keyIdBefore = await statusKeyId(config.socket);
    const { stdout } = await run(CLI, ['rotate', '--config', config.path, '--json'], { env: token.env });
    const rotated = JSON.parse(stdout) as { version: string; keyId: string };
    assert.equal(rotated.version, '2');
    assert.notEqual(rotated.keyId, keyIdBefore);
    await broker.waitForLog(record => record.msg === 'key set changed' && record.keyId === rotated.keyId);
    assert.equal(await statusKeyId(config.socket), rotated.keyId);
    const afterRotation = await encryptSome(config.socket, 10);
    for (const item of afterRotation) assert.equal(item.key_id, rotated.keyId);
    await decryptAll(config.socket, [...before, ...afterRotation]);
    await broker.stop();

    const restarted = await startBrokerProcess(config.path, token.env);
    try {
      assert.equal(await statusKeyId(config.socket), rotated.keyId);
      await decryptAll(config.socket, [...before, ...afterRotation]);
    } finally {
      await restarted.stop();
    }
  });

  it('creates its socket with mode 0600 and removes it on SIGTERM, exiting 0', async () => {
    const config = writeConfig(token);
    const broker = await startBrokerProcess(config.path, token.env);
    assert.equal(statSync(config.socket).mode & 0o777, 0o600);
    assert.equal(await broker.stop('SIGTERM'), 0);
    assert.equal(existsSync(config.socket), false);
    assert.ok(broker.logs.some(record => record.msg === 'stopped'));
  });

  it('logs and ignores SIGHUP, serving on; SIGTERM after it still drains and removes both sockets', async () => {
    const config = writeConfig(token);
    const broker = await startBrokerProcess(config.path, token.env);
    await broker.waitForLog(record => record.msg === 'admin API listening');
    const keyId = await statusKeyId(config.socket);
    broker.child.kill('SIGHUP');
    await broker.waitForLog(record => record.msg?.startsWith('signal ignored') === true);
    assert.equal(await statusKeyId(config.socket), keyId);
    assert.ok(existsSync(config.socket) && existsSync(config.adminSocket), 'both sockets are in place');
    assert.equal(await broker.stop('SIGTERM'), 0);
    assert.ok(broker.logs.some(record => record.msg === 'stopped'));
    assert.equal(existsSync(config.socket), false);
    assert.equal(existsSync(config.adminSocket), false);
  });

  it('honours a configured socket mode', async () => {
    const config = writeConfig(token, { socketMode: '0660' });
    const broker = await startBrokerProcess(config.path, token.env);
    try {
      assert.equal(statSync(config.socket).mode & 0o777, 0o660);
    } finally {
      await broker.stop();
    }
  });

  it('replaces a stale socket that nothing answers on', async () => {
    const config = writeConfig(token);
    // A socket file left behind by a process that died without unlinking it.
    await run('python3', [
      '-c',
      'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
      config.socket,
    ]);
    assert.ok(statSync(config.socket).isSocket());
    const broker = await startBrokerProcess(config.path, token.env);
    try {
      assert.match(await statusKeyId(config.socket), /^kbr1-/);
    } finally {
      await broker.stop();
    }
  });

  it('refuses to start on a socket another broker serves, and leaves that broker serving', async () => {
    const config = writeConfig(token);
    const first = await startBrokerProcess(config.path, token.env);
    try {
      const second = spawnBroker(config.path, token.env);
      assert.equal(await second.exited, 1);
      assert.match(second.text.join('\n'), /SOCKET_IN_USE: socket: another process is serving/);
      assert.match(await statusKeyId(config.socket), /^kbr1-/);
    } finally {
      await first.stop();
    }
  });

  it('refuses to replace a path that is not a socket', async () => {
    const config = writeConfig(token);
    writeFileSync(config.socket, 'precious');
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 4, 'a supervisor must not restart it');
    assert.match(broker.text.join('\n'), /SOCKET_PATH_INVALID: .* is not a socket/);
    assert.equal(readFileSync(config.socket, 'utf8'), 'precious');
  });

  it('drains in-flight calls on SIGTERM before exiting', async () => {
    const config = writeConfig(token);
    const broker = await startBrokerProcess(config.path, token.env);
    const [item] = await encryptSome(config.socket, 1);
    assert.ok(item);
    const client = createKmsV2Client(config.socket, 10000);
    try {
      // Enough calls that many are still in flight when the signal lands.
      const calls = Array.from({ length: 500 }, () =>
        client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id }),
      );
      const settled = Promise.allSettled(calls);
      await broker.waitForLog(record => record.op === 'decrypt' && record.outcome === 'ok');
      broker.child.kill('SIGTERM');
      const results = await settled;
      assert.equal(await broker.exited, 0);
      const fulfilled = results.filter(result => result.status === 'fulfilled');
      assert.ok(fulfilled.length > 0);
      for (const result of fulfilled) assert.deepEqual(result.value.plaintext, item.seed);
      // Calls the server had accepted complete; ones that arrive after it stops accepting
      // are refused as UNAVAILABLE, which the apiserver retries: never a wrong answer.
      for (const result of results) {
        if (result.status === 'rejected') assert.equal((result.reason as { code: number }).code, 14);
      }
      const signalAt = broker.logs.findIndex(record => record.msg === 'signal received');
      assert.ok(
        broker.logs.slice(signalAt).some(record => record.op === 'decrypt' && record.outcome === 'ok'),
        'calls in flight at SIGTERM completed after it',
      );
      const served = broker.logs.filter(record => record.op === 'decrypt' && record.outcome === 'ok').length;
      assert.equal(fulfilled.length, served, 'every call the broker served reached its caller');
    } finally {
      client.close();
    }
  });

  it('fails at once on a wrong PIN, says so without the PIN, and does not retry', async () => {
    const config = writeConfig(token, {
      backends: [pkcs11Backend(token, { pinFile: `${token.dir}/wrong-pin` })],
    });
    writeFileSync(`${token.dir}/wrong-pin`, 'not-the-pin-4711\n');
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 4, 'a supervisor must not retry the PIN');
    const output = broker.text.join('\n') + JSON.stringify(broker.logs);
    assert.match(
      output,
      /HSM_LOGIN_FAILED: backend hsm: the token rejected the PIN \(CKR_PIN_INCORRECT\); not retrying/,
    );
    assert.ok(!output.includes('not-the-pin-4711'));
    // The right PIN still works: one failed attempt did not lock the token.
    const good = await startBrokerProcess(writeConfig(token).path, token.env);
    await good.stop();
  });

  it('names generateIfMissing when the token holds no key version', async () => {
    addToken(token, 'empty', '246810');
    writeFileSync(`${token.dir}/empty-pin`, '246810');
    const config = writeConfig(token, {
      backends: [
        pkcs11Backend(token, {
          tokenLabel: 'empty',
          pinFile: `${token.dir}/empty-pin`,
          generateIfMissing: false,
        }),
      ],
    });
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 1);
    assert.match(
      broker.text.join('\n'),
      /KEY_MISSING: backend hsm holds no key version; set generateIfMissing: true/,
    );
    assert.equal(existsSync(config.statePath), false, 'no state is written for a failed start');
  });

  it('names the token when no token has the configured label', async () => {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, { tokenLabel: 'nope' })] });
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 1);
    assert.match(broker.text.join('\n'), /HSM_TOKEN_NOT_FOUND: backend hsm: no token with label 'nope'/);
  });

  it('rebuilds a missing state file from what the token holds, with the same key_id', async () => {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, { keyLabel: 'rebuild' })] });
    const first = await startBrokerProcess(config.path, token.env);
    const items = await encryptSome(config.socket, 5);
    const keyId = await statusKeyId(config.socket);
    await first.stop();
    rmSync(config.statePath);
    const second = await startBrokerProcess(config.path, token.env);
    try {
      assert.equal(await statusKeyId(config.socket), keyId);
      await decryptAll(config.socket, items);
      assert.ok(existsSync(config.statePath));
    } finally {
      await second.stop();
    }
  });

  it('rewrites its state file from memory when it disappears while serving', async () => {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, { keyLabel: 'vanish' })] });
    const broker = await startBrokerProcess(config.path, token.env);
    try {
      const original = readFileSync(config.statePath, 'utf8');
      rmSync(config.statePath);
      await broker.waitForLog(record => record.msg === 'state file disappeared; rewrote it from memory');
      assert.deepEqual(JSON.parse(readFileSync(config.statePath, 'utf8')), JSON.parse(original));
    } finally {
      await broker.stop();
    }
  });

  it('refuses to start on a corrupt state file and never overwrites it', async () => {
    const config = writeConfig(token);
    const garbage = '{"format": 1, "generation": 0, "backends": {"hsm": ';
    writeFileSync(config.statePath, garbage);
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 4, 'a supervisor must not restart it');
    assert.match(broker.text.join('\n'), /STATE_CORRUPT: state file .* is not valid JSON/);
    assert.equal(readFileSync(config.statePath, 'utf8'), garbage);
    assert.equal(existsSync(config.socket), false);
  });

  it('refuses a state file whose write version the token does not hold', async () => {
    const config = writeConfig(token, { backends: [pkcs11Backend(token, { keyLabel: 'mismatch' })] });
    const first = await startBrokerProcess(config.path, token.env);
    await first.stop();
    const state = JSON.parse(readFileSync(config.statePath, 'utf8')) as {
      backends: { hsm: { writeVersion: string; versions: { version: string }[] } };
    };
    state.backends.hsm.versions[0]!.version = '9';
    state.backends.hsm.writeVersion = '9';
    writeFileSync(config.statePath, JSON.stringify(state));
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 4, 'a supervisor must not restart it');
    assert.match(broker.text.join('\n'), /STATE_MISMATCH: backend hsm: the state says version 9 writes/);
  });

  it('prints usage and exits 2 on a bad command line', async () => {
    const child = spawn(CLI, ['serve', '--confg', 'x.yaml'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', chunk => (stderr += String(chunk)));
    const code = await new Promise(resolve => child.once('exit', resolve));
    assert.equal(code, 2, 'usage errors exit 2');
    assert.match(stderr, /unknown option '--confg'/);
  });

  it('without --config reads the file KMS_BROKER_CONFIG names, and exits 4 naming that path when there is none', async () => {
    const nowhere = join(tmpdir(), `kmsb-no-config-${process.pid}.yaml`);
    const child = spawn(CLI, ['serve'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, KMS_BROKER_CONFIG: nowhere },
    });
    let stderr = '';
    child.stderr.on('data', chunk => (stderr += String(chunk)));
    const code = await new Promise(resolve => child.once('exit', resolve));
    assert.equal(code, 4, 'no restart mends a missing config');
    assert.equal(
      stderr,
      `kms-broker: CONFIG_INVALID: no config file at ${nowhere}; pass --config FILE or set KMS_BROKER_CONFIG=FILE\n`,
    );
  });
});
