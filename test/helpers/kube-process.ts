// The Kubernetes binaries the end-to-end tests run (built by scripts/build-kube-apiserver.sh)
// and the process plumbing they share: free loopback ports, bounded polling, and child
// processes that are always stopped, also when a test fails half-way.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const GO_MOD = new URL('../e2e/kube/go.mod', import.meta.url).pathname;

/** The Kubernetes release the binaries are built from, as pinned in test/e2e/kube/go.mod. */
const KUBE_VERSION = /^\s*k8s\.io\/kubernetes (v1\.\S+)/m.exec(readFileSync(GO_MOD, 'utf8'))?.[1] ?? '';

/**
 * Where the build script puts the binaries: KUBE_BIN when set (scripts/test.sh passes the
 * script's answer on), else the script's own default under KUBE_CACHE_DIR or the user cache.
 */
function binDir(): string {
  if (process.env.KUBE_BIN !== undefined && process.env.KUBE_BIN !== '') return process.env.KUBE_BIN;
  const cache =
    process.env.KUBE_CACHE_DIR ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kms-broker', 'kube');
  return join(cache, KUBE_VERSION, 'bin');
}

/** The path of one built binary; a clear error (never a skip) when the build has not run. */
export function kubeBinary(name: 'kube-apiserver' | 'kube-controller-manager' | 'kubectl' | 'etcd'): string {
  const path = join(binDir(), name);
  if (!existsSync(path))
    throw new Error(
      `${path} is missing: run \`bash scripts/build-kube-apiserver.sh\` first (see test/e2e/README.md)`,
    );
  return path;
}

/** A port the OS just handed out on 127.0.0.1 (free when this returns). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function pause(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

/**
 * Calls `probe` every `intervalMs` until it returns something other than undefined; bounded
 * in time and in attempts. A probe that throws counts as "not yet" (a server still starting).
 */
export async function pollFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  options: { timeoutMs: number; intervalMs: number },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  const attempts = Math.ceil(options.timeoutMs / options.intervalMs) + 1;
  let lastError: unknown;
  for (let attempt = 0; attempt < attempts && Date.now() < deadline; attempt++) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await pause(options.intervalMs);
  }
  const cause = lastError instanceof Error ? `; last error: ${lastError.message}` : '';
  throw new Error(`${what}: not reached within ${options.timeoutMs} ms${cause}`);
}

export interface KubeProcess {
  readonly name: string;
  /** The first and the last lines of its stdout and stderr, for assertion messages. */
  output(): string;
  readonly running: boolean;
  /** Resolves with the first output line (from now on or still kept) that matches. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL at once (a crash: no goodbye to its peers or clients); resolves when it is gone. */
  kill(): Promise<void>;
}

/** Children still running: killed when the test process exits, whatever happened before. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

const KEPT_LINES = 200;

export function startProcess(name: string, binary: string, args: readonly string[]): KubeProcess {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  // The first lines say how it started (flags, config errors), the last what it does now.
  const first: string[] = [];
  const lines: string[] = [];
  let dropped = 0;
  const watchers = new Set<(line: string) => void>();
  const keep = (line: string) => {
    if (first.length < KEPT_LINES) first.push(line);
    else {
      lines.push(line);
      if (lines.length > KEPT_LINES) {
        lines.shift();
        dropped++;
      }
    }
    for (const watcher of watchers) watcher(line);
  };
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on('line', keep);
  let exited = false;
  const gone = new Promise<void>(resolve => {
    const done = () => {
      exited = true;
      live.delete(child);
      resolve();
    };
    child.once('exit', done);
    // A binary that cannot be started emits 'error' and never 'exit'.
    child.once('error', error => {
      keep(`${name}: ${error.message}`);
      done();
    });
  });
  return {
    name,
    output: () => [...first, ...(dropped > 0 ? [`[… ${dropped} lines …]`] : []), ...lines].join('\n'),
    get running() {
      return !exited;
    },
    waitForLine(pattern, timeoutMs) {
      const kept = [...first, ...lines].find(line => pattern.test(line));
      if (kept !== undefined) return Promise.resolve(kept);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          watchers.delete(watch);
          reject(new Error(`${name}: no output line matching ${String(pattern)} within ${timeoutMs} ms`));
        }, timeoutMs);
        const watch = (line: string) => {
          if (!pattern.test(line)) return;
          clearTimeout(timer);
          watchers.delete(watch);
          resolve(line);
        };
        watchers.add(watch);
      });
    },
    async stop(graceMs = 30_000) {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await gone;
      clearTimeout(timer);
    },
    async kill() {
      if (exited) return;
      child.kill('SIGKILL');
      await gone;
    },
  };
}
