// The CLI over the admin API, against a live broker on a real SoftHSM token: tables for
// people, JSON for scripts, exit codes scripts can rely on, one-line errors.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { adminClient } from '../helpers/admin-http.ts';
import { recordScan, usageScan } from '../helpers/usage-scans.ts';
import { execFile } from 'node:child_process';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, vaultBackend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { enableTransit, startDevServer, type BaoServer } from '../helpers/openbao.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';

function cli(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<CliRun> {
  return runCli(args, { env });
}

describe('kms-broker CLI over the admin API', () => {
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;

  before(async () => {
    token = createToken();
    // Version 1 stops writing at the rotation below; a scan after it counts at once.
    config = writeConfig(token, { retirement: { scanAfterWriteMs: 0 } });
    broker = await startBrokerProcess(config.path, token.env);
  });
  after(async () => {
    await broker.stop();
    token.remove();
  });

  it('prints status as an aligned table, and as JSON with --json', async () => {
    const human = await cli(['status', '--config', config.path]);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^FIELD\s+VALUE$/);
    const valueColumn = (lines[0] ?? '').indexOf('VALUE');
    for (const line of lines.slice(1)) assert.notEqual(line[valueColumn - 1], undefined, line);
    assert.match(human.stdout, /^key_id\s+kbr1-/m);
    assert.match(human.stdout, /^healthz\s+ok$/m);

    const json = await cli(['status', '--config', config.path, '--json']);
    const status = JSON.parse(json.stdout) as {
      keyId: string;
      healthz: string;
      writeVersions: Record<string, string>;
    };
    const client = createKmsV2Client(config.socket);
    try {
      assert.equal(status.keyId, (await client.status()).key_id);
    } finally {
      client.close();
    }
    assert.deepEqual(status.writeVersions, { hsm: '1' });
  });

  it('rotates, and keys shows the new write version next to the old one', async () => {
    const rotated = await cli(['rotate', 'hsm', '--config', config.path, '--json']);
    assert.equal(rotated.code, 0, rotated.stderr);
    const result = JSON.parse(rotated.stdout) as { version: string; keyId: string };
    assert.equal(result.version, '2');

    const keys = await cli(['keys', '--config', config.path]);
    assert.match(keys.stdout, /^BACKEND\s+VERSION\s+ROLE\s+AGE\s+LAST DECRYPT\s+DECRYPTS$/m);
    assert.match(keys.stdout, /^hsm\s+1\s+active\s+\d+[smhd]\s/m);
    assert.match(keys.stdout, /^hsm\s+2\s+write\s/m);
    const wide = await cli(['keys', '--config', config.path, '-o', 'wide']);
    assert.match(
      wide.stdout,
      /^BACKEND\s+VERSION\s+ROLE\s+CREATED\s+LAST DECRYPT\s+DECRYPTS\s+SINCE START$/m,
    );
    assert.match(wide.stdout, /^hsm\s+1\s+active\s+\d{4}-\d\d-\d\dT/m);

    const backends = await cli(['backends', '--config', config.path, '--json']);
    const listed = JSON.parse(backends.stdout) as { backends: { name: string; writeVersion: string }[] };
    assert.deepEqual(
      listed.backends.map(backend => [backend.name, backend.writeVersion]),
      [['hsm', '2']],
    );
  });

  it('retires a version once a scan shows nothing needs it, and restores it; refuses the write version with exit 1 and one clear line', async () => {
    const unproven = await cli(['retire', 'hsm', '1', '--config', config.path]);
    assert.equal(unproven.code, 1);
    assert.match(
      unproven.stderr,
      /^kms-broker: NO_USAGE_EVIDENCE: version 1 of backend hsm stopped writing at .*no usage scan is recorded\. Run `kms-broker usage` after \S+ and retire again\n$/,
    );
    const scannedAt = new Date(Date.now() + 1000);
    await recordScan(
      adminClient(config.adminSocket),
      config.adminToken,
      usageScan(scannedAt, [[{ backend: 'hsm', version: '2' }, 3]]),
    );
    const retired = await cli(['retire', 'hsm', '1', '--config', config.path]);
    assert.equal(retired.code, 0, retired.stderr);
    assert.equal(retired.stdout, 'hsm version 1 is retired\n');
    const restored = await cli(['restore', 'hsm', '1', '--config', config.path]);
    assert.equal(restored.stdout, 'hsm version 1 is active\n');

    const refused = await cli(['retire', 'hsm', '2', '--force', '--config', config.path]);
    assert.equal(refused.code, 1);
    assert.equal(refused.stdout, '');
    assert.equal(
      refused.stderr,
      'kms-broker: VERSION_IN_USE: version 2 of backend hsm is its write version; rotate before retiring it\n',
    );
  });

  it('reads and sets the failover order, sending the ETag for the caller', async () => {
    const read = await cli(['failover', '--config', config.path]);
    assert.equal(read.stdout, 'order: hsm\nwrap:  first\n');
    const set = await cli(['failover', 'set', 'hsm', '--wrap', 'first', '--config', config.path, '--json']);
    assert.equal(set.code, 0, set.stderr);
    assert.deepEqual((JSON.parse(set.stdout) as { order: string[] }).order, ['hsm']);
    const unknown = await cli(['failover', 'set', 'hsm,nope', '--config', config.path]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^kms-broker: INVALID_REQUEST: order\[1\]: no backend is named 'nope'\n$/);
  });

  it('takes the address and token from flags or the environment', async () => {
    const env = {
      ...process.env,
      KMS_BROKER_ADMIN: `unix://${config.adminSocket}`,
      KMS_BROKER_TOKEN: config.viewerToken,
    };
    const viaEnv = await cli(['keys', '--json'], env);
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    const viewerRotates = await cli(['rotate', 'hsm'], env);
    assert.equal(viewerRotates.code, 1);
    assert.match(viewerRotates.stderr, /^kms-broker: FORBIDDEN: token dashboards has the viewer role/);
    const viaFlags = await cli([
      'status',
      '--admin',
      `unix://${config.adminSocket}`,
      '--token-file',
      `${config.dir}/admin-token`,
    ]);
    assert.equal(viaFlags.code, 0, viaFlags.stderr);
    const noToken = await cli(['status', '--admin', `unix://${config.adminSocket}`], {
      ...process.env,
      KMS_BROKER_TOKEN: '',
    });
    assert.equal(noToken.code, 1);
  });

  it('exits 3 when the broker cannot be reached, and 2 on a usage error', async () => {
    const unreachable = await cli([
      'status',
      '--admin',
      `unix://${config.dir}/missing.sock`,
      '--token-file',
      `${config.dir}/admin-token`,
    ]);
    assert.equal(unreachable.code, 3);
    assert.match(
      unreachable.stderr,
      /^kms-broker: cannot reach the admin API at unix:\/\/.*missing\.sock \(ENOENT\)\n$/,
    );
    const usage = await cli(['retire', 'hsm']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /missing required argument 'version'/);
  });

  // Last: its Decrypt would count as a recent use of version 1, which a test above retires.
  it('verifies the socket, and exits with its own code, quietly, when its output is closed early', async () => {
    const full = await cli(['verify', '--socket', config.socket]);
    assert.equal(full.code, 0, full.stderr);
    assert.match(full.stdout, /^ok {3}status: .*\nok {3}encrypt: .*\nok {3}decrypt: plaintext matches\n$/);
    // A relative path names the socket under the working folder (gRPC would read its first
    // segment as an authority).
    const folder = dirname(dirname(config.socket));
    const relativeRun = await new Promise<CliRun>(resolve =>
      execFile(
        CLI,
        ['verify', '--socket', relative(folder, config.socket)],
        { cwd: folder, timeout: 30000 },
        (error, stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr }),
      ),
    );
    assert.equal(relativeRun.code, 0, relativeRun.stderr);
    // A reader gone before the first line is written, and one that leaves after one byte.
    for (const reader of ['true', 'head -c1']) {
      const script = `"$0" verify --socket "$1" | ${reader} >/dev/null; exit "\${PIPESTATUS[0]}"`;
      const piped = await new Promise<CliRun>(resolve =>
        execFile('bash', ['-c', script, CLI, config.socket], { timeout: 30000 }, (error, stdout, stderr) =>
          resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr }),
        ),
      );
      assert.deepEqual([piped.code, piped.stderr], [0, ''], reader);
    }
  });
});

describe('kms-broker status while a backend is down', () => {
  let token: SoftHsmToken;
  let vault: BaoServer;
  let config: TestConfig;
  let broker: BrokerProcess;

  before(async () => {
    token = createToken();
    vault = await startDevServer();
    await enableTransit(vault);
    const dir = mkdtempSync(join(tmpdir(), 'kmsb-cli-'));
    const tokenFile = `${dir}/vault-token`;
    writeFileSync(tokenFile, vault.rootToken, { mode: 0o600 });
    config = writeConfig(
      undefined,
      {
        backends: [pkcs11Backend(token), vaultBackend(vault.address, { method: 'token', tokenFile })],
        failover: { order: ['hsm', 'vault'], wrap: 'all' },
        health: { probeIntervalMs: 200, failureThreshold: 1 },
      },
      dir,
    );
    broker = await startBrokerProcess(config.path, token.env);
  });
  after(async () => {
    await broker.stop();
    await vault.stop();
    token.remove();
  });

  it('exits 0 while all is well, and 5 with the degraded backend and the thin key_id in the table', async () => {
    const healthy = await cli(['status', '--config', config.path]);
    assert.equal(healthy.code, 0, healthy.stderr);
    assert.match(healthy.stdout, /^degraded\s+-$/m);
    assert.match(healthy.stdout, /^under-replicated\s+-$/m);

    await vault.stop();
    // Seeds written now carry the HSM's wrap only: under-replicated, yet served.
    const client = createKmsV2Client(config.socket);
    let keyId: string;
    try {
      for (let attempt = 0; ; attempt++) {
        const status = await cli(['status', '--config', config.path, '--json']);
        if (status.code === 5 || attempt === 50) break;
        await sleep(100);
      }
      keyId = (await client.encrypt(randomBytes(32))).key_id;
    } finally {
      client.close();
    }

    const degraded = await cli(['status', '--config', config.path]);
    assert.equal(degraded.code, 5, degraded.stdout + degraded.stderr);
    assert.match(degraded.stdout, /^healthz\s+ok$/m);
    assert.match(degraded.stdout, /^degraded\s+vault \(see kms-broker backends\)$/m);
    assert.match(degraded.stdout, new RegExp(`^under-replicated\\s+${keyId}$`, 'm'));
    assert.equal(degraded.stderr, '');

    const json = await cli(['status', '--config', config.path, '--json']);
    assert.equal(json.code, 5);
    const body = JSON.parse(json.stdout) as { degraded: string[]; underReplicatedKeyIds: string[] };
    assert.deepEqual(body.degraded, ['vault']);
    assert.deepEqual(body.underReplicatedKeyIds, [keyId]);
  });

  it('exits 1 when Status is not healthy: the only writer is down', async () => {
    const set = await cli(['failover', 'set', 'vault', '--wrap', 'first', '--config', config.path]);
    assert.equal(set.code, 0, set.stderr);
    const unhealthy = await cli(['status', '--config', config.path]);
    assert.equal(unhealthy.code, 1, unhealthy.stdout + unhealthy.stderr);
    assert.match(unhealthy.stdout, /^healthz\s+unhealthy backends: vault \(/m);
    assert.equal(unhealthy.stderr, '');
  });
});
