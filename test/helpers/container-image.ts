// Builds the image with scripts/build-image.sh and runs it under podman, the container engine
// Debian ships, as the kubelet would run the static Pod: the image's own entrypoint, its user,
// a read-only root, no capabilities, no network but its own loopback.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

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
  readonly buildSeconds: number;
  readonly output: string;
}

/** Why this machine cannot build or run the image, if it cannot. */
export async function missingEngine(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root: debootstrap, and rootful podman';
  for (const tool of ['podman', 'runc', 'debootstrap']) {
    const found = await run(tool, ['--version']).then(
      () => true,
      () => false,
    );
    if (!found) return `${tool} is not installed (scripts/install.sh installs it from Debian)`;
  }
  return undefined;
}

export async function buildImage(outputDir: string): Promise<BuiltImage> {
  const started = Date.now();
  const child = spawn('bash', [buildScript, outputDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve));
  if (code !== 0) throw new Error(`scripts/build-image.sh exited with ${code}:\n${output.slice(-4000)}`);
  const result = /^image: archive=(\S+) ref=(\S+)$/m.exec(output);
  if (result === null) throw new Error(`scripts/build-image.sh printed no image line:\n${output}`);
  return {
    archive: result[1] as string,
    ref: result[2] as string,
    buildSeconds: (Date.now() - started) / 1000,
    output,
  };
}

/** The image config inside an OCI archive, read through its index and manifest. */
export async function readImageConfig(archive: string): Promise<ImageConfig> {
  const member = async (path: string) =>
    JSON.parse((await run('tar', ['-xOf', archive, path], { maxBuffer: 1 << 20 })).stdout) as unknown;
  const blob = (digest: string) => `./blobs/sha256/${digest.replace('sha256:', '')}`;
  const index = (await member('./index.json')) as { manifests: { digest: string }[] };
  const manifest = (await member(blob(index.manifests[0]?.digest ?? ''))) as { config: { digest: string } };
  const config = (await member(blob(manifest.config.digest))) as { config: ImageConfig };
  return config.config;
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
