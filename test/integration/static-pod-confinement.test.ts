// The broker under the confinement of deploy/kms-broker.static-pod.yaml, without a kubelet:
// the Pod's uid and gid, no capabilities, no new privileges, and a read-only root file system
// where only the Pod's writable mounts and SoftHSM's token folder (what PKCS#11 needs) can be
// written. deploy/config.yaml's paths are moved under a temporary root. Under that, the broker
// must start on a fresh token, answer the Pod's probes, serve a root client (kube-apiserver) on
// its 0600 socket, and drain and remove the socket on SIGTERM.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { CLI } from '../helpers/broker-process.ts';
import { createToken } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';

const deploy = (file: string) => new URL(`../../deploy/${file}`, import.meta.url).pathname;
const READY_TIMEOUT_MS = 30000;
const POLL_INTERVAL_MS = 200;

interface PodSpec {
  readonly spec: {
    readonly securityContext: { readonly runAsUser: number; readonly runAsGroup: number };
    readonly containers: readonly {
      readonly volumeMounts: readonly { readonly mountPath: string; readonly readOnly?: boolean }[];
      readonly readinessProbe: { readonly httpGet: { readonly path: string } };
      readonly livenessProbe: { readonly httpGet: { readonly path: string } };
    }[];
  };
}

/** Why this machine cannot emulate the Pod, if it cannot. */
function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to enter a mount namespace and drop to the Pod uid';
  for (const tool of ['unshare', 'setpriv']) {
    if (spawnSync(tool, ['--version']).error !== undefined) return `${tool} (util-linux) is not installed`;
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once('error', reject);
  });
}

/** Lines of /proc/<pid>/status as a map: Uid, Gid, CapEff, CapBnd, NoNewPrivs... */
function processStatus(pid: number): Map<string, string> {
  const lines = readFileSync(`/proc/${pid}/status`, 'utf8').trim().split('\n');
  return new Map(lines.map(line => line.split(':\t') as [string, string]));
}

describe('the broker inside the static Pod confinement', () => {
  it('starts on a fresh token, answers the probes, serves a root client and drains, with nothing writable but its mounts', async t => {
    const missing = missingPrerequisite();
    if (missing !== undefined) {
      t.skip(missing);
      return;
    }
    const pod = parse(readFileSync(deploy('kms-broker.static-pod.yaml'), 'utf8')) as PodSpec;
    const { runAsUser: uid, runAsGroup: gid } = pod.spec.securityContext;
    const [container] = pod.spec.containers;
    assert.ok(container !== undefined);

    const root = mkdtempSync(join(tmpdir(), 'kmsb-pod-'));
    defer(t, () => rmSync(root, { recursive: true, force: true }));
    chmodSync(root, 0o755); // the Pod's user must reach the folders below
    const under = (path: string) => join(root, path);

    // deploy/config.yaml with its files under the temporary root and the admin API on a free port.
    const config = parse(readFileSync(deploy('config.yaml'), 'utf8')) as {
      socket: string;
      state: { path: string };
      admin: { listen: string; tokens: { file: string }[] };
      backends: { pinFile: string; tokenLabel: string; generateIfMissing?: boolean }[];
    };
    const port = await freePort();
    const [backend] = config.backends;
    const [adminToken] = config.admin.tokens;
    assert.ok(backend !== undefined && adminToken !== undefined);
    config.socket = under(config.socket);
    config.state.path = under(config.state.path);
    config.admin.listen = `127.0.0.1:${port}`;
    adminToken.file = under(adminToken.file);
    backend.pinFile = under(backend.pinFile);
    backend.generateIfMissing = true; // the first node on an empty token
    const configPath = under('/etc/kms-broker/config.yaml');
    mkdirSync(dirname(configPath), { recursive: true });
    writeFileSync(configPath, stringify(config));

    // The host side, prepared as docs/deploy.md says: folders owned by the Pod's uid.
    const token = createToken(backend.tokenLabel, under('/var/lib/softhsm'));
    const secrets = [...new Set([dirname(backend.pinFile), dirname(adminToken.file)])];
    for (const folder of secrets) mkdirSync(folder, { recursive: true });
    copyFileSync(token.pinFile, backend.pinFile);
    writeFileSync(adminToken.file, 'admin-token-for-the-confinement-test\n');
    const writable = container.volumeMounts
      .filter(mount => mount.readOnly !== true)
      .map(mount => under(mount.mountPath));
    writable.push(join(token.dir, 'tokens')); // SoftHSM writes its key objects and locks there
    for (const folder of writable) mkdirSync(folder, { recursive: true });
    execFileSync('chown', ['-R', `${uid}:${gid}`, token.dir, ...secrets, ...writable]);
    chmodSync(backend.pinFile, 0o400);
    chmodSync(adminToken.file, 0o400);

    // A new mount namespace: the writable folders bound onto themselves, then / read-only;
    // then the Pod's identity with every capability gone and no way to regain one.
    const script = [
      'set -e',
      'for folder in "$@"; do mount --bind "$folder" "$folder"; done',
      'mount -o remount,bind,ro /',
      `exec setpriv --reuid=${uid} --regid=${gid} --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs ${CLI} serve --config ${configPath}`,
    ].join('\n');
    const child = spawn('unshare', ['--mount', 'sh', '-c', script, 'sh', ...writable], {
      env: { ...token.env, TMPDIR: under('/tmp') },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)));
    let running = true;
    void exited.then(() => (running = false));
    defer(t, async () => {
      if (running) child.kill('SIGKILL');
      await exited;
    });

    // What the kubelet does: poll the readiness probe, here bounded in time.
    const probe = (path: string) =>
      fetch(`http://127.0.0.1:${port}${path}`).then(
        response => response.status,
        () => 0,
      );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while ((await probe(container.readinessProbe.httpGet.path)) !== 200) {
      assert.ok(running, `the broker exited: ${stderr}`);
      assert.ok(Date.now() < deadline, `not ready within ${READY_TIMEOUT_MS} ms: ${stderr}`);
      await delay(POLL_INTERVAL_MS);
    }
    assert.equal(await probe(container.livenessProbe.httpGet.path), 200);

    // The confinement is real: the serving process is the Pod's user, with nothing extra.
    const pid = child.pid as number;
    const status = processStatus(pid);
    assert.equal(status.get('Uid'), `${uid}\t${uid}\t${uid}\t${uid}`);
    assert.equal(status.get('Gid'), `${gid}\t${gid}\t${gid}\t${gid}`);
    assert.equal(status.get('CapEff'), '0000000000000000');
    assert.equal(status.get('CapBnd'), '0000000000000000');
    assert.equal(status.get('NoNewPrivs'), '1');
    const rootMount = readFileSync(`/proc/${pid}/mounts`, 'utf8')
      .split('\n')
      .find(line => line.split(' ')[1] === '/');
    assert.match(rootMount ?? '', /\sro[,\s]/);

    // Its files belong to the Pod's user: the socket, 0600, and the state.
    const socket = statSync(config.socket);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
    assert.equal(socket.uid, uid);
    assert.equal(statSync(config.state.path).uid, uid);

    // kube-apiserver runs as root: it reaches the 0600 socket and gets a working key.
    const client = createKmsV2Client(config.socket, 5000);
    try {
      const kmsStatus = await client.status();
      assert.equal(kmsStatus.healthz, 'ok');
      const seed = Buffer.alloc(32, 7);
      const encrypted = await client.encrypt(seed);
      assert.equal(encrypted.key_id, kmsStatus.key_id);
      const decrypted = await client.decrypt({
        ciphertext: encrypted.ciphertext,
        key_id: encrypted.key_id,
        annotations: encrypted.annotations,
      });
      assert.deepEqual(decrypted.plaintext, seed);
    } finally {
      client.close();
    }

    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    assert.equal(existsSync(config.socket), false, 'the socket is removed on SIGTERM');
  });
});
