// Builds the image with scripts/build-image.sh and runs it under podman, the container engine
// Debian ships, as the kubelet would run the static Pod: the image's own entrypoint, its user,
// a read-only root, no capabilities, no network but its own loopback.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { basename } from 'node:path';

const run = promisify(execFile);
const buildScript = new URL('../../scripts/build-image.sh', import.meta.url).pathname;

/**
 * Flags this machine needs, and any other tolerates:
 * - runc, not podman's default crun: crun refuses a host whose cgroups are mounted in hybrid
 *   (v1 + v2) mode, as the sandboxes CI runs in are;
 * - explicit rlimits at or below the caller's: podman's defaults raise RLIMIT_NPROC, which needs
 *   CAP_SYS_RESOURCE, missing from such a sandbox's bounding set.
 */
export const ENGINE_FLAGS = ['--runtime', 'runc'] as const;
const RLIMITS = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096'] as const;
/** The Pod's container securityContext, in podman's words. */
const CONFINEMENT = [
  '--read-only',
  '--cap-drop',
  'ALL',
  '--security-opt',
  'no-new-privileges',
  '--network',
  'none',
];

export interface ImageConfig {
  readonly User: string;
  readonly Entrypoint: readonly string[];
  readonly Cmd: readonly string[];
}

export interface BuiltImage {
  readonly archive: string;
  readonly ref: string;
  /** The cached debootstrap root (a tar), usable as a local base image. */
  readonly baseTar: string;
  readonly buildSeconds: number;
  readonly output: string;
}

const succeeds = (command: string, args: readonly string[], timeout = 60_000) =>
  run(command, args, { timeout }).then(
    () => undefined,
    (error: Error & { stderr?: string }) =>
      (error.stderr ?? error.message).trim().split('\n').at(-1) ?? error.message,
  );

async function missingTools(tools: readonly string[]): Promise<string | undefined> {
  for (const tool of tools) {
    if ((await succeeds('sh', ['-c', `command -v ${tool}`])) !== undefined) {
      return `${tool} is not installed (scripts/install.sh installs it from Debian)`;
    }
  }
  return undefined;
}

/** Why this machine cannot build the image (scripts/build-image.sh), if it cannot. */
export async function cannotBuild(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'scripts/build-image.sh needs root (debootstrap)';
  return missingTools(['debootstrap', 'npm', 'g++', 'make', 'python3']);
}

/**
 * Loads the image into podman and starts a container of it; says why that cannot be done
 * here, if it cannot.
 */
export async function loadIntoPodman(image: BuiltImage): Promise<string | undefined> {
  const missing = await missingTools(['podman', 'runc']);
  if (missing !== undefined) return missing;
  const notLoaded = await succeeds('podman', ['load', '--quiet', '--input', image.archive], 300_000);
  if (notLoaded !== undefined) return `podman cannot load the archive: ${notLoaded}`;
  const failed = await succeeds('podman', [
    ...ENGINE_FLAGS,
    'run',
    '--rm',
    '--network',
    'none',
    ...RLIMITS,
    '--entrypoint',
    '/bin/true',
    image.ref,
  ]);
  return failed === undefined ? undefined : `podman cannot start a container here: ${failed}`;
}

/** Why scripts/verify-image.sh's chroot fallback cannot run here, if it cannot. */
export async function cannotChroot(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'the chroot fallback needs root';
  const missing = await missingTools(['unshare', 'setpriv', 'ip', 'chroot']);
  if (missing !== undefined) return missing;
  const failed = await succeeds('unshare', ['--mount', '--pid', '--net', '--fork', 'true']);
  return failed === undefined ? undefined : `unshare cannot make namespaces here: ${failed}`;
}

/** Says why a part of the test cannot run, where the reporter and a CI log both show it. */
export function explain(t: { diagnostic(message: string): void }, reason: string): void {
  t.diagnostic(`NOT RUN: ${reason}`);
  process.stderr.write(`image.test: not run: ${reason}\n`);
}

export async function buildImage(outputDir: string): Promise<BuiltImage> {
  const started = Date.now();
  // The verify runs below, step by step, where a failure says more than the script's output.
  const child = spawn('bash', [buildScript, '--no-verify', outputDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve));
  if (code !== 0) throw new Error(`scripts/build-image.sh exited with ${code}:\n${output.slice(-4000)}`);
  const result = /^image: archive=(\S+) ref=(\S+)$/m.exec(output);
  if (result === null) throw new Error(`scripts/build-image.sh printed no image line:\n${output}`);
  const base = /^base: (\S+)$/m.exec(output);
  if (base === null) throw new Error(`scripts/build-image.sh printed no base line:\n${output}`);
  return {
    archive: result[1] as string,
    ref: result[2] as string,
    baseTar: base[1] as string,
    buildSeconds: (Date.now() - started) / 1000,
    output,
  };
}

const blob = (digest: string) => `./blobs/sha256/${digest.replace('sha256:', '')}`;

async function readManifest(archive: string) {
  const member = async (path: string) =>
    JSON.parse((await run('tar', ['-xOf', archive, path], { maxBuffer: 1 << 20 })).stdout) as unknown;
  const index = (await member('./index.json')) as { manifests: { digest: string }[] };
  const manifest = (await member(blob(index.manifests[0]?.digest ?? ''))) as {
    config: { digest: string };
    layers: { digest: string }[];
  };
  const config = (await member(blob(manifest.config.digest))) as { config: ImageConfig };
  return { config: config.config, layers: manifest.layers.map(layer => layer.digest) };
}

/** The image config inside an OCI archive, read through its index and manifest. */
export async function readImageConfig(archive: string): Promise<ImageConfig> {
  return (await readManifest(archive)).config;
}

/** The image's single layer (build-image.sh writes one), unpacked under `into`. */
export async function unpackLayer(
  archive: string,
  into: string,
  paths: readonly string[] = [],
): Promise<void> {
  const { layers } = await readManifest(archive);
  assert.equal(layers.length, 1, 'build-image.sh writes one layer');
  mkdirSync(into, { recursive: true });
  const script = 'tar -xOf "$1" "$2" | tar -xz --no-same-owner -C "$3" "${@:4}"';
  await run('bash', ['-c', script, 'unpack', archive, blob(layers[0] as string), into, ...paths], {
    timeout: 300_000,
  });
}

/** `tar -tv` of the image's layer: one line per entry, with owner and mode. */
export async function listLayer(archive: string): Promise<string[]> {
  const { layers } = await readManifest(archive);
  const script = 'tar -xOf "$1" "$2" | tar -tvz --numeric-owner';
  const { stdout } = await run('bash', ['-c', script, 'list', archive, blob(layers[0] as string)], {
    timeout: 300_000,
    maxBuffer: 256 << 20,
  });
  return stdout.split('\n').filter(line => line !== '');
}

export async function podman(args: readonly string[], timeoutMs = 120_000): Promise<string> {
  const { stdout } = await run('podman', [...ENGINE_FLAGS, ...args], {
    timeout: timeoutMs,
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** Runs podman and returns its exit status and output, whatever the status. */
export async function podmanStatus(args: readonly string[], timeoutMs = 120_000) {
  return run('podman', [...ENGINE_FLAGS, ...args], { timeout: timeoutMs }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: Error & { code?: number | string; stdout?: string; stderr?: string }) => ({
      code: typeof error.code === 'number' ? error.code : -1,
      stdout: error.stdout ?? '',
      stderr: error.stderr ?? error.message,
    }),
  );
}

/** `podman run` arguments for the image under the static Pod's confinement. */
export function confinedRun(options: {
  readonly user: string;
  readonly mounts: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}): string[] {
  return [
    ...CONFINEMENT,
    ...RLIMITS,
    '--user',
    options.user,
    // The Pod's tmp volume: an emptyDir in memory.
    '--tmpfs',
    '/tmp:size=16m',
    ...options.mounts.flatMap(mount => ['--volume', mount]),
    ...Object.entries(options.env).flatMap(([name, value]) => ['--env', `${name}=${value}`]),
  ];
}

const verifyScript = new URL('../../scripts/verify-image.sh', import.meta.url).pathname;

/** scripts/verify-image.sh with one engine: exit status and everything it printed. */
export async function verifyImage(archive: string, engine: 'podman' | 'chroot') {
  return run('bash', [verifyScript, '--engine', engine, archive], {
    timeout: 300_000,
    maxBuffer: 16 << 20,
  }).then(
    ({ stdout, stderr }) => ({ code: 0, output: stdout + stderr }),
    (error: Error & { code?: number | string; stdout?: string; stderr?: string }) => ({
      code: typeof error.code === 'number' ? error.code : -1,
      output: `${error.stdout ?? ''}${error.stderr ?? error.message}`,
    }),
  );
}

const repoRoot = new URL('../..', import.meta.url).pathname;
/** The host's trust store: a TLS-intercepting proxy's CA must reach apt and npm in the build. */
const HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/**
 * Builds deploy/Containerfile with podman, on the debootstrap root instead of the pinned
 * registry base (none reachable here), and saves it as an OCI archive.
 */
export async function buildContainerfile(image: BuiltImage, archive: string): Promise<string> {
  // Tagged by the cached root's key and kept: a new import would be a new base, and podman's
  // layer cache (apt, npm, the addon) would miss on every run.
  const base = `localhost/kmsb-debootstrap-base:${basename(image.baseTar, '.tar')}`;
  const ref = 'localhost/kms-broker-containerfile:test';
  if ((await podmanStatus(['image', 'exists', base])).code !== 0) {
    await podman(['import', '--quiet', image.baseTar, base], 300_000);
  }
  const trust = existsSync(HOST_CA_BUNDLE) ? ['--volume', `${HOST_CA_BUNDLE}:${HOST_CA_BUNDLE}:ro`] : [];
  const build = await podmanStatus(
    [
      'build',
      '--network',
      'host',
      ...RLIMITS,
      ...trust,
      '--build-arg',
      `BASE_IMAGE=${base}`,
      '--file',
      `${repoRoot}deploy/Containerfile`,
      '--tag',
      ref,
      repoRoot,
    ],
    900_000,
  );
  assert.equal(
    build.code,
    0,
    `podman build -f deploy/Containerfile failed:\n${(build.stdout + build.stderr).slice(-4000)}`,
  );
  await podman(['save', '--format', 'oci-archive', '--output', archive, ref], 300_000);
  await podmanStatus(['rmi', ref]);
  return archive;
}
