// The deployment artifacts under deploy/ agree with each other and keep their security
// settings: the example config loads, the static Pod mounts what that config names with no
// privilege beyond it, and the systemd unit keeps its hardening (and stays valid for systemd).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { readConfigFile } from '../../src/config/load.ts';

const root = new URL('../../', import.meta.url).pathname;
const deploy = (file: string) => join(root, 'deploy', file);
const config = readConfigFile(deploy('config.yaml'));
/** Where the Pod and the unit expect the config: the same path on the host and in the Pod. */
const CONFIG_PATH = '/etc/kms-broker/config.yaml';

interface Probe {
  readonly httpGet: { readonly host: string; readonly port: number; readonly path: string };
}
interface Mount {
  readonly name: string;
  readonly mountPath: string;
  readonly readOnly?: boolean;
}
interface StaticPod {
  readonly kind: string;
  readonly metadata: { readonly namespace: string };
  readonly spec: {
    readonly hostNetwork: boolean;
    readonly dnsPolicy: string;
    readonly priorityClassName: string;
    readonly terminationGracePeriodSeconds: number;
    readonly securityContext: Record<string, unknown> & {
      seccompProfile: { type: string };
      runAsUser: number;
      runAsGroup: number;
    };
    readonly containers: readonly {
      readonly args: readonly string[];
      readonly securityContext: Record<string, unknown> & { capabilities: Record<string, unknown> };
      readonly resources: {
        readonly limits: Record<string, string>;
        readonly requests: Record<string, string>;
      };
      readonly livenessProbe: Probe;
      readonly readinessProbe: Probe;
      readonly startupProbe: Probe;
      readonly volumeMounts: readonly Mount[];
    }[];
    readonly volumes: readonly {
      readonly name: string;
      readonly hostPath?: { path: string; type: string };
    }[];
  };
}

describe('deploy/config.yaml', () => {
  it('is a valid broker config whose socket and state sit in the folders the Pod and the unit provide', () => {
    assert.equal(dirname(config.socket), '/var/run/kmsplugin');
    assert.equal(dirname(config.state.path), '/var/lib/kms-broker');
    assert.equal(config.admin.listen, '127.0.0.1:8787');
  });
});

describe('deploy/kms-broker.static-pod.yaml', () => {
  const pod = parse(readFileSync(deploy('kms-broker.static-pod.yaml'), 'utf8')) as StaticPod;
  const [container, ...others] = pod.spec.containers;
  assert.ok(container !== undefined && others.length === 0, 'exactly one container');

  it('is a kube-system Pod on the host network, critical to the node, with the node resolver', () => {
    assert.equal(pod.kind, 'Pod');
    assert.equal(pod.metadata.namespace, 'kube-system');
    assert.equal(pod.spec.hostNetwork, true);
    assert.equal(pod.spec.dnsPolicy, 'Default');
    assert.equal(pod.spec.priorityClassName, 'system-node-critical');
  });

  it('runs as a non-root user with no capabilities, no escalation, a read-only root and RuntimeDefault seccomp', () => {
    assert.equal(pod.spec.securityContext.runAsNonRoot, true);
    assert.ok(pod.spec.securityContext.runAsUser > 0);
    assert.equal(pod.spec.securityContext.seccompProfile.type, 'RuntimeDefault');
    const security = container.securityContext;
    assert.equal(security.privileged, false);
    assert.equal(security.allowPrivilegeEscalation, false);
    assert.equal(security.readOnlyRootFilesystem, true);
    assert.deepEqual(security.capabilities, { drop: ['ALL'] });
  });

  it("probes the admin API on the node's loopback: liveness /healthz only, readiness /readyz", () => {
    const port = Number(config.admin.listen.split(':')[1]);
    for (const [probe, path] of [
      [container.startupProbe, '/healthz'],
      [container.livenessProbe, '/healthz'],
      [container.readinessProbe, '/readyz'],
    ] as const) {
      assert.deepEqual(probe.httpGet, { host: '127.0.0.1', port, path });
    }
  });

  it('mounts the socket folder, the state folder and the config read-only, at the paths the config names', () => {
    const mounts = new Map(container.volumeMounts.map(mount => [mount.mountPath, mount]));
    const hostPaths = new Map(pod.spec.volumes.map(volume => [volume.name, volume.hostPath]));
    const hostPathOf = (mountPath: string) => hostPaths.get(mounts.get(mountPath)?.name ?? '');
    // The folder, never the socket file, so a re-created socket reaches kube-apiserver.
    assert.deepEqual(hostPathOf(dirname(config.socket)), { path: dirname(config.socket), type: 'Directory' });
    assert.deepEqual(hostPathOf(dirname(config.state.path)), {
      path: dirname(config.state.path),
      type: 'Directory',
    });
    assert.deepEqual(hostPathOf(CONFIG_PATH), { path: CONFIG_PATH, type: 'File' });
    assert.equal(mounts.get(CONFIG_PATH)?.readOnly, true);
    assert.deepEqual(container.args, ['serve', '--config', CONFIG_PATH]);
    // The PIN and token files the config names are mounted read-only.
    const secretFiles = [
      ...config.admin.tokens.map(token => token.file),
      ...config.backends.map(backend => (backend as { pinFile: string }).pinFile),
    ];
    for (const file of secretFiles) assert.equal(mounts.get(dirname(file))?.readOnly, true, file);
    // Every volume is used: nothing is mounted into the Pod by accident.
    const used = new Set(container.volumeMounts.map(mount => mount.name));
    assert.deepEqual(
      pod.spec.volumes.map(volume => volume.name).filter(name => !used.has(name)),
      [],
    );
  });

  it('outlives the drain on SIGTERM and bounds memory without a CPU limit', () => {
    assert.ok(pod.spec.terminationGracePeriodSeconds * 1000 > config.timeouts.shutdownGraceMs);
    assert.ok(container.resources.limits.memory !== undefined);
    assert.equal(container.resources.limits.cpu, undefined);
    assert.ok(container.resources.requests.cpu !== undefined);
  });
});

describe('deploy/Containerfile and scripts/build-image.sh', () => {
  const pod = parse(readFileSync(deploy('kms-broker.static-pod.yaml'), 'utf8')) as StaticPod;
  const { runAsUser, runAsGroup } = pod.spec.securityContext;
  const containerfile = readFileSync(deploy('Containerfile'), 'utf8');
  const script = readFileSync(join(root, 'scripts/build-image.sh'), 'utf8');

  it("run as the Pod's user, with the Pod's arguments as the default command", () => {
    assert.match(containerfile, new RegExp(`^USER ${runAsUser}:${runAsGroup}$`, 'm'));
    assert.match(script, new RegExp(`^uid=${runAsUser}$`, 'm'));
    assert.equal(runAsUser, runAsGroup, 'the script gives user and group one number');
    const cmd = /^CMD (\[.*\])$/m.exec(containerfile);
    assert.deepEqual(JSON.parse(cmd?.[1] ?? 'null'), pod.spec.containers[0]?.args);
    assert.match(containerfile, /^ENTRYPOINT \["\/opt\/kms-broker\/bin\/kms-broker"\]$/m);
  });

  it('pin the base image by digest and build the addon with the same node-gyp', () => {
    assert.match(containerfile, /^ARG BASE_IMAGE=[^\s@]+:bookworm-slim@sha256:[0-9a-f]{64}$/m);
    const scriptGyp = /^NODE_GYP_VERSION=(\S+)$/m.exec(script)?.[1];
    assert.ok(scriptGyp !== undefined);
    assert.match(
      containerfile,
      new RegExp(`^ARG NODE_GYP_VERSION=${scriptGyp.replaceAll('.', '\\.')}$`, 'm'),
    );
  });

  it('send the engine only package*.json, bin/, proto/, src/ and its compiler config (no node_modules, .cache or sockets)', () => {
    const rules = readFileSync(join(root, '.dockerignore'), 'utf8')
      .split('\n')
      .filter(line => line.trim() !== '' && !line.startsWith('#'));
    assert.deepEqual(rules, [
      '*',
      '!package.json',
      '!package-lock.json',
      '!bin/',
      '!proto/',
      '!src/',
      '!tsconfig.json',
      '!tsconfig.build.json',
      '!scripts/build.sh',
    ]);
    for (const copied of containerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const source of (copied[1] as string).split(' ')) {
        assert.ok(
          rules.includes(`!${source}`) || rules.includes(`!${source}/`),
          `COPY ${source} is in the context`,
        );
      }
    }
  });
});

describe('deploy/kubeadm-kms-broker.patch.yaml', () => {
  interface ExtraVolume {
    readonly name: string;
    readonly hostPath: string;
    readonly mountPath: string;
    readonly readOnly?: boolean;
    readonly pathType: string;
  }
  const patch = parse(readFileSync(deploy('kubeadm-kms-broker.patch.yaml'), 'utf8')) as {
    apiVersion: string;
    kind: string;
    apiServer: { extraArgs: { name: string; value: string }[]; extraVolumes: ExtraVolume[] };
  };
  const volumes = patch.apiServer.extraVolumes;
  /** The volume whose mount holds `path`, inside the apiserver's container. */
  const volumeHolding = (path: string) =>
    volumes.find(volume => path === volume.mountPath || path.startsWith(`${volume.mountPath}/`));

  it('is a kubeadm v1beta4 ClusterConfiguration whose only flag is the EncryptionConfiguration', () => {
    assert.equal(patch.apiVersion, 'kubeadm.k8s.io/v1beta4');
    assert.equal(patch.kind, 'ClusterConfiguration');
    assert.deepEqual(
      patch.apiServer.extraArgs.map(arg => arg.name),
      ['encryption-provider-config'],
    );
  });

  it("mounts the broker's socket folder (not the file) at the path `kms-broker encryption-config` names", () => {
    // The real command on the example config: the endpoint cannot drift from what it writes.
    const written = spawnSync(
      join(root, 'bin/kms-broker'),
      ['encryption-config', '--config', deploy('config.yaml')],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(written.status, 0, written.stderr);
    const encryption = parse(written.stdout) as {
      resources: { providers: { kms: { endpoint: string } }[] }[];
    };
    const endpoint = encryption.resources[0]?.providers[0]?.kms.endpoint ?? '';
    assert.equal(endpoint, `unix://${config.socket}`);
    const socketDir = dirname(endpoint.replace('unix://', ''));
    const socketVolume = volumeHolding(config.socket);
    assert.deepEqual(socketVolume, {
      name: socketVolume?.name,
      hostPath: socketDir,
      mountPath: socketDir,
      pathType: 'Directory',
    });
    // The same host folder the static Pod shares with the apiserver.
    const pod = parse(readFileSync(deploy('kms-broker.static-pod.yaml'), 'utf8')) as StaticPod;
    assert.ok(pod.spec.volumes.some(volume => volume.hostPath?.path === socketDir));
  });

  it('mounts the EncryptionConfiguration read-only, as a folder, where the flag points', () => {
    const file = patch.apiServer.extraArgs[0]?.value ?? '';
    const volume = volumeHolding(file);
    assert.ok(volume !== undefined, `no extraVolume holds ${file}`);
    assert.equal(volume.hostPath, volume.mountPath);
    assert.equal(volume.hostPath, dirname(file));
    assert.equal(volume.readOnly, true);
    assert.equal(volume.pathType, 'Directory');
  });

  it('is the one the deploy guide shows', () => {
    const guide = readFileSync(join(root, 'docs/deploy.md'), 'utf8');
    const documented = /```yaml\n(apiVersion: kubeadm\.k8s\.io\/v1beta4[\s\S]*?)```/.exec(guide);
    assert.ok(documented !== null, 'docs/deploy.md shows the ClusterConfiguration');
    assert.deepEqual(parse(documented[1] as string), patch);
  });
});

describe('deploy/kms-broker.service', () => {
  const text = readFileSync(deploy('kms-broker.service'), 'utf8');
  const unit = parseUnit(text);
  const service = (key: string) => unit.get(`Service.${key}`);

  it('is ordered before the kubelet, runs the broker as its own user and restarts it only on failure', () => {
    assert.deepEqual(unit.get('Unit.Before'), ['kubelet.service']);
    assert.deepEqual(service('Type'), ['exec']);
    assert.deepEqual(service('ExecStart'), [`/opt/kms-broker/bin/kms-broker serve --config ${CONFIG_PATH}`]);
    assert.deepEqual(service('User'), ['kms-broker']);
    assert.deepEqual(service('Restart'), ['on-failure']);
    // Exit status 4: a wrong PIN or a bad config; restarting would only retry the PIN.
    assert.deepEqual(service('RestartPreventExitStatus'), ['4']);
    assert.ok(parseSeconds(service('TimeoutStopSec')?.[0]) * 1000 > config.timeouts.shutdownGraceMs);
  });

  it('provides the socket folder (kept across restarts) and the state folder the config names', () => {
    assert.equal(`/var/run/${service('RuntimeDirectory')?.[0]}`, dirname(config.socket));
    assert.deepEqual(service('RuntimeDirectoryPreserve'), ['yes']);
    assert.equal(`/var/lib/${service('StateDirectory')?.[0]}`, dirname(config.state.path));
  });

  it('keeps its hardening, and never sets MemoryDenyWriteExecute (V8 needs W+X memory)', () => {
    const expected: Record<string, string> = {
      NoNewPrivileges: 'yes',
      CapabilityBoundingSet: '',
      AmbientCapabilities: '',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6',
      SystemCallFilter: '@system-service',
      SystemCallArchitectures: 'native',
      RestrictSUIDSGID: 'yes',
      RestrictNamespaces: 'yes',
      UMask: '0077',
    };
    for (const [key, value] of Object.entries(expected)) assert.deepEqual(service(key), [value], key);
    assert.equal(service('MemoryDenyWriteExecute'), undefined);
  });

  it('passes systemd-analyze verify without a warning', t => {
    const found = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (found.error !== undefined) {
      t.skip('systemd-analyze is not installed on this machine');
      return;
    }
    // verify checks that ExecStart exists: point it at this checkout instead of /opt.
    const folder = mkdtempSync(join(tmpdir(), 'kmsb-unit-'));
    try {
      const copy = join(folder, 'kms-broker.service');
      writeFileSync(copy, text.replaceAll('/opt/kms-broker/', root));
      const checked = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
      // Unknown or misspelt keys are only warnings (exit status 0): the output must be empty too.
      assert.equal(checked.status, 0, checked.stderr);
      assert.equal(checked.stderr, '');
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
});

/** `Section.Key` → values in order (a key may repeat); comments and blank lines skipped. */
function parseUnit(text: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  let section = '';
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) continue;
    const header = /^\[(\w+)\]$/.exec(trimmed);
    if (header !== null) {
      section = header[1] as string;
      continue;
    }
    const equals = trimmed.indexOf('=');
    assert.ok(equals > 0, `not a key=value line: ${trimmed}`);
    const key = `${section}.${trimmed.slice(0, equals)}`;
    entries.set(key, [...(entries.get(key) ?? []), trimmed.slice(equals + 1)]);
  }
  return entries;
}

function parseSeconds(value: string | undefined): number {
  const match = /^(\d+)s$/.exec(value ?? '');
  assert.ok(match !== null, `not a number of seconds: ${value}`);
  return Number(match[1]);
}
