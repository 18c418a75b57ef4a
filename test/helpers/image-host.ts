// The host side of a broker that runs in the image, prepared as docs/deploy.md says, under one
// folder: a SoftHSM token, the Pod's folders owned by the Pod's user, deploy/config.yaml as
// shipped (plus a key generated on the empty token), and the mounts that bring them in.
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { createToken, SOFTHSM_MODULE } from './softhsm.ts';

const CONTAINER_SOFTHSM_CONF = '/etc/kms-broker/softhsm2.conf';
const CONTAINER_TOKENS = '/var/lib/softhsm/tokens';
const deployConfig = new URL('../../deploy/config.yaml', import.meta.url).pathname;

export interface BrokerHost {
  /** For confinedRun(): the user, the environment and the volumes. */
  readonly options: {
    readonly user: string;
    readonly env: Readonly<Record<string, string>>;
    readonly mounts: readonly string[];
  };
  /** The socket's path inside the container, as the config names it. */
  readonly socket: string;
}

export function prepareBrokerHost(dir: string, uid: number, gid: number): BrokerHost {
  const token = createToken('kms', join(dir, 'softhsm'));
  const host = (path: string) => join(dir, path);
  for (const folder of ['run', 'state', 'secrets', 'etc']) mkdirSync(host(folder), { recursive: true });
  copyFileSync(token.pinFile, host('secrets/hsm-pin'));
  writeFileSync(host('secrets/admin-token'), 'admin-token-for-the-image-test\n');
  const config = parse(readFileSync(deployConfig, 'utf8')) as {
    socket: string;
    backends: { generateIfMissing?: boolean }[];
  };
  (config.backends[0] as { generateIfMissing?: boolean }).generateIfMissing = true; // an empty token
  writeFileSync(host('etc/config.yaml'), stringify(config));
  // SoftHSM's config as the container sees it: the token folder at the path it is mounted.
  writeFileSync(
    host('etc/softhsm2.conf'),
    `directories.tokendir = ${CONTAINER_TOKENS}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
  );
  const tokens = join(token.dir, 'tokens');
  execFileSync('chown', ['-R', `${uid}:${gid}`, host('run'), host('state'), host('secrets'), tokens]);
  for (const file of ['secrets/hsm-pin', 'secrets/admin-token']) chmodSync(host(file), 0o400);
  return {
    socket: config.socket,
    options: {
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
    },
  };
}
