// Start-up failures a host can cause: a socket folder others could tamper with, a folder or
// filesystem that cannot hold a socket, an admin port in use, a state file that cannot be
// written, an admin certificate and key that do not belong together. Each one stops
// `serve` with a message naming the config key, the path and the cause (never INTERNAL),
// and exits 4 unless a restart may mend it. Real SoftHSM, real processes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { spawnBroker, stopAllBrokers } from '../helpers/broker-process.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { createCa, issueCertificate } from '../helpers/x509.ts';

/** Writes to `path` until its filesystem is full. */
function fillUp(path: string): void {
  const chunk = Buffer.alloc(1024);
  try {
    for (;;) appendFileSync(path, chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  }
}

/** Another user of the host: the static Pod's uid. */
const OTHER_UID = 65532;

describe('start-up failures', () => {
  let token: SoftHsmToken;

  before(() => {
    token = createToken();
  });
  afterEach(stopAllBrokers);
  after(() => token.remove());

  /** Serves `config`, expecting it to fail: its exit code and what it printed. */
  async function failedStart(config: TestConfig): Promise<{ code: number | null; output: string }> {
    const broker = spawnBroker(config.path, token.env);
    // Every case here fails before the admin API listens: once it does, the start succeeded.
    const started = broker
      .waitForLog(record => record.msg === 'admin API listening', 60000)
      .then(
        () => 'started',
        () => 'exited',
      );
    const code = await Promise.race([broker.exited, started]);
    assert.notEqual(code, 'started', 'the broker started');
    const output = broker.text.join('\n');
    assert.ok(!output.includes('INTERNAL'), output);
    return { code: code as number | null, output };
  }

  it('refuses a socket folder every user may write to, even with the sticky bit, and exits 4', async () => {
    for (const mode of [0o777, 0o1777]) {
      const config = writeConfig(token);
      chmodSync(config.dir, mode);
      const { code, output } = await failedStart(config);
      assert.equal(code, 4, 'a supervisor must not restart it');
      const octal = mode.toString(8).padStart(4, '0');
      assert.match(
        output,
        new RegExp(
          `SOCKET_PATH_INVALID: socket: the folder ${config.dir} is writable by every user \\(mode ${octal}\\), so another user could replace the socket; run chmod o-w ${config.dir}`,
        ),
      );
      assert.equal(existsSync(config.socket), false);
    }
  });

  it('refuses an admin socket folder owned by another user, and removes the KMS socket it made', async () => {
    const base = writeConfig(token);
    const folder = join(base.dir, 'admin');
    mkdirSync(folder, { mode: 0o755 });
    chownSync(folder, OTHER_UID, OTHER_UID);
    const config = writeConfig(
      token,
      { admin: { ...(base.values.admin as object), listen: `unix://${join(folder, 'admin.sock')}` } },
      base.dir,
    );
    const { code, output } = await failedStart(config);
    assert.equal(code, 4);
    assert.match(
      output,
      new RegExp(
        `SOCKET_PATH_INVALID: admin\\.listen: the folder ${folder} is owned by uid ${OTHER_UID}, neither root nor the broker's user \\(uid 0\\), so another user could replace the socket; run chown 0 ${folder}`,
      ),
    );
    assert.equal(existsSync(config.socket), false);
  });

  it('names the key, the path and the errno of a socket folder that cannot be made, and exits 4', async () => {
    const base = writeConfig(token);
    writeFileSync(join(base.dir, 'run'), 'a file, not a folder');
    const socket = join(base.dir, 'run', 'kmsplugin', 'kms.sock');
    const { code, output } = await failedStart(writeConfig(token, { socket }, base.dir));
    assert.equal(code, 4);
    assert.match(
      output,
      new RegExp(
        `SOCKET_PATH_INVALID: socket: cannot listen on ${socket} \\(ENOTDIR\\); a part of the path is a file, not a folder`,
      ),
    );
  });

  it('names the errno of a filesystem that refuses sockets (procfs), and exits 4', async () => {
    const socket = `/proc/kmsb-${process.pid}.sock`;
    const { code, output } = await failedStart(writeConfig(token, { socket }));
    assert.equal(code, 4);
    assert.match(output, new RegExp(`SOCKET_PATH_INVALID: socket: cannot listen on ${socket} \\(EACCES\\)`));
  });

  it('names admin.listen and EADDRINUSE when the admin port is taken, and exits 1 so that it is retried', async () => {
    const holder: Server = createServer();
    await new Promise<void>(resolve => holder.listen(0, '127.0.0.1', resolve));
    try {
      const port = (holder.address() as { port: number }).port;
      const base = writeConfig(token);
      const config = writeConfig(
        token,
        { admin: { ...(base.values.admin as object), listen: `127.0.0.1:${port}` } },
        base.dir,
      );
      const { code, output } = await failedStart(config);
      assert.equal(code, 1, 'the port may be held by a broker still draining: a restart may succeed');
      assert.match(
        output,
        new RegExp(
          `SOCKET_IN_USE: admin\\.listen: 127\\.0\\.0\\.1:${port} is in use by another process \\(EADDRINUSE\\)`,
        ),
      );
      assert.equal(existsSync(config.socket), false, 'the KMS socket it made is removed');
    } finally {
      holder.close();
    }
  });

  it('names the state path and the errno when the first state cannot be written, and exits 4', async () => {
    // sysfs refuses to create files, to root too, as a read-only mount or a folder of
    // another user would.
    const statePath = `/sys/kmsb-${process.pid}-state.json`;
    const config = writeConfig(token, { state: { path: statePath } });
    const { code, output } = await failedStart(config);
    assert.equal(code, 4);
    assert.match(
      output,
      new RegExp(
        `STATE_WRITE_FAILED: cannot write state file ${statePath} \\(EACCES\\); the broker's user may not write there`,
      ),
    );
    assert.equal(existsSync(config.socket), false);
  });

  it('exits 1 on a full disk at the first start, so that it is retried once space is freed', async t => {
    const base = writeConfig(token);
    const disk = join(base.dir, 'disk');
    mkdirSync(disk);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', disk], { stdio: 'ignore' });
    } catch {
      return t.skip('needs a tmpfs mount (root with CAP_SYS_ADMIN)');
    }
    try {
      fillUp(join(disk, 'filler'));
      const statePath = join(disk, 'state.json');
      const { code, output } = await failedStart(
        writeConfig(token, { state: { path: statePath } }, base.dir),
      );
      assert.equal(code, 1);
      assert.match(
        output,
        new RegExp(`STATE_WRITE_FAILED: cannot write state file ${statePath} \\(ENOSPC\\); the disk is full`),
      );
    } finally {
      execFileSync('umount', [disk]);
    }
  });

  it('refuses an admin TLS key that is not the key of its certificate, and exits 4', async () => {
    const base = writeConfig(token);
    const ca = createCa(join(base.dir, 'ca'));
    const server = issueCertificate(ca, join(base.dir, 'tls'), {
      commonName: 'localhost',
      usage: 'server',
      altNames: ['DNS:localhost'],
    });
    const config = writeConfig(
      token,
      {
        admin: {
          ...(base.values.admin as object),
          // The CA's key beside the server's certificate: each file alone is fine.
          tls: { certFile: server.certFile, keyFile: ca.keyFile },
        },
      },
      base.dir,
    );
    const { code, output } = await failedStart(config);
    assert.equal(code, 4);
    assert.match(
      output,
      new RegExp(
        `CONFIG_INVALID: .*admin\\.tls\\.keyFile: ${ca.keyFile} is not the private key of the certificate in ${server.certFile} \\(admin\\.tls\\.certFile\\)`,
      ),
    );
  });
});
