// The container image, built as an operator without a registry builds it (scripts/build-image.sh)
// and run under podman the way the static Pod runs it: its own entrypoint and user, a read-only
// root, no capabilities, the Pod's mounts (socket folder, state folder, config, secrets, tmp) and
// a SoftHSM token folder and library mounted from the host, as a vendor's library would be.
// Inside it `kms-broker verify` must pass against the serving broker, the PKCS#11 addon must
// open and close a real session and exit 0 (no crash at exit under the bundled Node.js 24), and
// kube-apiserver's side (root on the host) must reach the socket through the shared folder.
// No engine, no image: the test fails and says why, it is never skipped.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
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
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { createToken, SOFTHSM_MODULE } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import {
  buildImage,
  confinedRun,
  missingEngine,
  podman,
  podmanStatus,
  readImageConfig,
} from '../helpers/container-image.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';

const deploy = (file: string) => new URL(`../../deploy/${file}`, import.meta.url).pathname;
/** An uncached build (debootstrap, npm ci, the addon) takes about 5 min on 2 busy cores. */
const BUILD_TIMEOUT_MS = 25 * 60_000;
const READY_TIMEOUT_MS = 60_000;
const POLL_INTERVAL_MS = 200;
const CONTAINER_SOFTHSM_CONF = '/etc/kms-broker/softhsm2.conf';
const CONTAINER_TOKENS = '/var/lib/softhsm/tokens';

interface PodSpec {
  readonly spec: {
    readonly securityContext: { readonly runAsUser: number; readonly runAsGroup: number };
    readonly containers: readonly { readonly args: readonly string[] }[];
  };
}

/** Opens and closes a session on the first token, then finalizes: what crashed with node-gyp 9. */
const PKCS11_OPEN_CLOSE = `
const pkcs11js = require('pkcs11js');
const module = new pkcs11js.PKCS11();
module.load(${JSON.stringify(SOFTHSM_MODULE)});
module.C_Initialize();
const [slot] = module.C_GetSlotList(true);
const session = module.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
console.log('token ' + module.C_GetTokenInfo(slot).label.trim());
module.C_CloseSession(session);
module.C_Finalize();
module.close();`;

describe('the container image (scripts/build-image.sh, run by podman with runc)', () => {
  it(
    'builds, and under podman as the static Pod runs it (uid 65532, read-only root, no capabilities) serves a host SoftHSM token; `kms-broker verify` inside it passes',
    { timeout: BUILD_TIMEOUT_MS + 5 * 60_000 },
    async t => {
      const missing = await missingEngine();
      assert.equal(missing, undefined, `no way to build and run the image on this machine: ${missing}`);

      const work = mkdtempSync(join(tmpdir(), 'kmsb-image-'));
      defer(t, () => rmSync(work, { recursive: true, force: true }));
      chmodSync(work, 0o755); // uid 65532 must reach the mounted folders below
      const image = await buildImage(join(work, 'out'));
      const archiveMb = statSync(image.archive).size / 2 ** 20;
      t.diagnostic(`build ${image.buildSeconds.toFixed(0)} s, archive ${archiveMb.toFixed(0)} MB`);
      t.diagnostic(
        image.output
          .split('\n')
          .filter(line => line.startsWith('build-image: '))
          .join(' | '),
      );

      // The image's config is what the Pod expects: its user, its entrypoint, its arguments.
      const pod = parse(readFileSync(deploy('kms-broker.static-pod.yaml'), 'utf8')) as PodSpec;
      const { runAsUser: uid, runAsGroup: gid } = pod.spec.securityContext;
      const config = await readImageConfig(image.archive);
      assert.equal(config.User, `${uid}:${gid}`);
      assert.deepEqual(config.Entrypoint, ['/opt/kms-broker/bin/kms-broker']);
      assert.deepEqual(config.Cmd, pod.spec.containers[0]?.args);

      await podman(['load', '--quiet', '--input', image.archive], 300_000);
      defer(t, () => podmanStatus(['rmi', '--force', image.ref]));

      // The host side, prepared as docs/deploy.md says, under a temporary folder.
      const token = createToken('kms', join(work, 'softhsm'));
      const host = (path: string) => join(work, 'host', path);
      for (const folder of ['run', 'state', 'secrets', 'etc']) mkdirSync(host(folder), { recursive: true });
      copyFileSync(token.pinFile, host('secrets/hsm-pin'));
      writeFileSync(host('secrets/admin-token'), 'admin-token-for-the-image-test\n');
      const brokerConfig = parse(readFileSync(deploy('config.yaml'), 'utf8')) as {
        socket: string;
        backends: { generateIfMissing?: boolean }[];
      };
      (brokerConfig.backends[0] as { generateIfMissing?: boolean }).generateIfMissing = true; // an empty token
      writeFileSync(host('etc/config.yaml'), stringify(brokerConfig));
      // SoftHSM's config as the container sees it: the token folder at the path it is mounted.
      writeFileSync(
        host('etc/softhsm2.conf'),
        `directories.tokendir = ${CONTAINER_TOKENS}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
      );
      const tokens = join(token.dir, 'tokens');
      execFileSync('chown', ['-R', `${uid}:${gid}`, host('run'), host('state'), host('secrets'), tokens]);
      for (const file of ['secrets/hsm-pin', 'secrets/admin-token']) chmodSync(host(file), 0o400);

      const options = {
        user: `${uid}:${gid}`,
        env: { SOFTHSM2_CONF: CONTAINER_SOFTHSM_CONF },
        mounts: [
          `${host('run')}:/var/run/kmsplugin`,
          `${host('state')}:/var/lib/kms-broker`,
          `${host('etc/config.yaml')}:/etc/kms-broker/config.yaml:ro`,
          `${host('secrets')}:/etc/kms-broker/secrets:ro`,
          `${host('etc/softhsm2.conf')}:${CONTAINER_SOFTHSM_CONF}:ro`,
          `${tokens}:${CONTAINER_TOKENS}`,
          `${SOFTHSM_MODULE}:${SOFTHSM_MODULE}:ro`,
        ],
      };

      // The addon under the image's own runtime: a real session opened and closed, exit 0.
      const addon = await podmanStatus([
        'run',
        '--rm',
        ...confinedRun(options),
        '--workdir',
        '/opt/kms-broker',
        '--entrypoint',
        '/opt/kms-broker/node_modules/node/bin/node',
        image.ref,
        '-e',
        PKCS11_OPEN_CLOSE,
      ]);
      assert.deepEqual(
        { code: addon.code, stdout: addon.stdout.trim() },
        { code: 0, stdout: 'token kms' },
        `the PKCS#11 addon in the image (139 is a crash): ${addon.stderr}`,
      );

      // The broker, from the image's entrypoint and default command, as the Pod starts it.
      const name = `kmsb-image-test-${process.pid}`;
      await podman(['run', '--detach', '--name', name, ...confinedRun(options), image.ref]);
      defer(t, () => podmanStatus(['rm', '--force', '--time', '0', name]));
      const pid = Number((await podman(['inspect', '--format', '{{.State.Pid}}', name])).trim());
      assert.ok(pid > 0, 'the container has a process');
      const socket = host('run/kms.sock');
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (!existsSync(socket)) {
        const state = (await podman(['inspect', '--format', '{{.State.Status}}', name])).trim();
        if (state !== 'running' || Date.now() > deadline) {
          const logs = await podmanStatus(['logs', name]);
          assert.fail(
            `the broker in the container is ${state}, no socket after ${READY_TIMEOUT_MS} ms: ${logs.stderr}`,
          );
        }
        await delay(POLL_INTERVAL_MS);
      }

      // The confinement is real: the serving process is the Pod's user, with nothing extra.
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(status, /^CapEff:\t0{16}$/m);
      assert.match(status, /^NoNewPrivs:\t1$/m);
      const rootMount = readFileSync(`/proc/${pid}/mounts`, 'utf8')
        .split('\n')
        .find(line => line.split(' ')[1] === '/');
      assert.match(rootMount ?? '', /\sro[,\s]/, 'the root file system is read-only');

      // `kms-broker verify` inside the container, against the broker serving there.
      const verifyStarted = Date.now();
      const verify = await podmanStatus([
        'exec',
        name,
        '/opt/kms-broker/bin/kms-broker',
        'verify',
        '--socket',
        brokerConfig.socket,
      ]);
      t.diagnostic(`verify inside the container: ${Date.now() - verifyStarted} ms`);
      assert.equal(verify.code, 0, `verify failed: ${verify.stdout}${verify.stderr}`);
      assert.match(verify.stdout, /^ok {3}decrypt: plaintext matches$/m);

      // kube-apiserver's side: root on the host, through the shared socket folder.
      const client = createKmsV2Client(socket, 5000);
      try {
        assert.equal((await client.status()).healthz, 'ok');
      } finally {
        client.close();
      }

      // The kubelet's stop: SIGTERM to the container's process; the broker drains and exits 0.
      process.kill(pid, 'SIGTERM');
      assert.equal((await podman(['wait', name], 60_000)).trim(), '0');
      assert.equal(existsSync(socket), false, 'the socket is removed on SIGTERM');
    },
  );
});
