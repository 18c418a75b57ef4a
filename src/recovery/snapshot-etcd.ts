// Serves an etcd snapshot file read-only for the time of a drill or a recovery, with etcd's
// own tools: `etcdutl snapshot restore` into a fresh private folder (it checks the snapshot's
// hash, so a truncated or damaged file is refused with its reason), then `etcd` on that data
// on loopback ports only. The process is stopped by its PID and the folder removed in every
// outcome, Ctrl-C included: restored data holds every Secret of the cluster, encrypted.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, statSync } from 'node:fs';
import { http } from '../node-http.ts';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { BrokerError } from '../errors.ts';

const RESTORE_TIMEOUT_MS = 10 * 60_000;
const START_TIMEOUT_MS = 60_000;
const POLL_INTERVAL_MS = 100;
const STOP_TIMEOUT_MS = 10_000;
const MAX_OUTPUT_LINES = 20;
const NAME = 'kms-broker-snapshot';

export interface SnapshotEtcd {
  /** The client URL, http on 127.0.0.1. */
  readonly endpoint: string;
}

/** Finds etcdutl and etcd in `binDir` (--etcd-bin-dir), else on PATH; names the flag when missing. */
export function findEtcdBinaries(binDir: string | undefined): { etcdutl: string; etcd: string } {
  const find = (name: string) => {
    const dirs =
      binDir !== undefined ? [binDir] : (process.env.PATH ?? '').split(delimiter).filter(dir => dir !== '');
    for (const dir of dirs) {
      const path = join(dir, name);
      try {
        accessSync(path, constants.X_OK);
        if (statSync(path).isFile()) return path;
      } catch {
        // not here
      }
    }
    throw new BrokerError(
      'ETCD_TOOL_MISSING',
      binDir !== undefined
        ? `no executable ${name} in --etcd-bin-dir ${binDir}; put etcd's ${name} (the same version as the cluster's etcd) there`
        : `no ${name} on PATH; install etcd's ${name} (the same version as the cluster's etcd) or name its folder with --etcd-bin-dir <dir>`,
    );
  };
  return { etcdutl: find('etcdutl'), etcd: find('etcd') };
}

/** Restores `snapshot`, serves it while `use` runs, then stops etcd and removes the data. */
export async function withSnapshotEtcd<T>(
  snapshot: string,
  binDir: string | undefined,
  use: (etcd: SnapshotEtcd) => Promise<T>,
): Promise<T> {
  const tools = findEtcdBinaries(binDir);
  try {
    if (!statSync(snapshot).isFile()) throw new Error('not a file');
  } catch (error) {
    throw new BrokerError(
      'SNAPSHOT_INVALID',
      `--snapshot ${snapshot}: cannot read it (${(error as NodeJS.ErrnoException).code ?? 'not a file'})`,
    );
  }
  // mkdtemp makes the folder 0700: only this user can read the restored data.
  const folder = mkdtempSync(join(tmpdir(), 'kms-broker-snapshot-'));
  // Ctrl-C (or SIGTERM) kills the tool running now; the folder is removed once it has exited,
  // so that no write of it lands after the removal, and then the process exits.
  let interrupted: NodeJS.Signals | undefined;
  let running: ChildProcess | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted ??= signal;
    running?.kill('SIGKILL');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const endpoint = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const dataDir = join(folder, 'data');
    const cluster = [
      `--name=${NAME}`,
      `--initial-cluster=${NAME}=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
    ];
    await restore(tools.etcdutl, snapshot, [`--data-dir=${dataDir}`, ...cluster], child => (running = child));
    if (interrupted !== undefined) throw new Error('interrupted');
    const output: string[] = [];
    const etcd = spawn(
      tools.etcd,
      [
        ...cluster,
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${endpoint}`,
        `--advertise-client-urls=${endpoint}`,
        `--listen-peer-urls=${peer}`,
        '--log-level=error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    running = etcd;
    etcd.stderr?.on('data', (chunk: Buffer) => {
      output.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter(line => line !== ''),
      );
      output.splice(0, Math.max(0, output.length - MAX_OUTPUT_LINES));
    });
    await waitServing(etcd, endpoint, output);
    return await use({ endpoint });
  } finally {
    if (running !== undefined) await stop(running);
    rmSync(folder, { recursive: true, force: true });
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    if (interrupted !== undefined) {
      process.stderr.write(
        `kms-broker: interrupted (${interrupted}); stopped etcd and removed its copy of the snapshot\n`,
      );
      process.exit(interrupted === 'SIGINT' ? 130 : 143);
    }
  }
}

/** `etcdutl snapshot restore`; its own reason when it refuses the file (e.g. a hash mismatch). */
function restore(
  etcdutl: string,
  snapshot: string,
  args: readonly string[],
  started: (child: ChildProcess) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      etcdutl,
      ['snapshot', 'restore', snapshot, ...args],
      { timeout: RESTORE_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 },
      (error, _stdout, stderr) => {
        if (error === null) return resolve();
        reject(
          new BrokerError(
            'SNAPSHOT_INVALID',
            `etcdutl refused the snapshot ${snapshot}: ${reasonIn(stderr)}; take a new snapshot (etcdctl snapshot save) or use another copy`,
          ),
        );
      },
    );
    started(child);
  });
}

/** The gist of etcdutl's stderr: its "Error:" line, else its last line. */
function reasonIn(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map(line => line.trim())
    .filter(line => line !== '');
  const error = lines.find(line => line.startsWith('Error:'));
  const reason = (error ?? lines.at(-1) ?? 'no reason given').replace(/^Error:\s*/, '');
  return reason.length > 300 ? `${reason.slice(0, 300)}…` : reason;
}

/** Bounded wait until etcd answers /health, or its output when it exits first. */
async function waitServing(child: ChildProcess, endpoint: string, output: readonly string[]): Promise<void> {
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (gone)
      throw new BrokerError(
        'SNAPSHOT_INVALID',
        `etcd did not serve the restored snapshot: ${output.join(' | ') || 'it exited'}`,
      );
    if (await healthy(endpoint)) return;
    await Promise.race([new Promise(resolve => setTimeout(resolve, POLL_INTERVAL_MS)), exited]);
  }
  throw new BrokerError(
    'SNAPSHOT_INVALID',
    `etcd did not serve the restored snapshot within ${START_TIMEOUT_MS / 1000} s`,
  );
}

function healthy(endpoint: string): Promise<boolean> {
  return new Promise(resolve => {
    const req = http.request(`${endpoint}/health`, { timeout: 2000, agent: false }, res => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve(res.statusCode === 200 && /"health":\s*"true"/.test(Buffer.concat(chunks).toString('utf8'))),
      );
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** SIGTERM by PID, SIGKILL if it has not exited in time. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/** A port the kernel gave and released: free now, on loopback. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address !== null
          ? resolve(address.port)
          : reject(new Error('no port')),
      );
    });
  });
}
