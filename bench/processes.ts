// The processes a benchmark run starts (brokers, the bare server, the reference plugin,
// clients), each stopped by the run's clean-up stack even when a phase fails, and the
// bounded waits that know when they are ready.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import type { CaseSpec } from './client.ts';
import type { Target } from './drivers.ts';
import type { LoadResult } from './load.ts';

const NODE = process.execPath;
const STOP_GRACE_MS = 5000;
const POLL_MS = 50;

/** Clean-ups run last registered first; every one runs even when another fails. */
export class CleanUp {
  readonly #steps: (() => unknown)[] = [];

  push(step: () => unknown): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        process.stderr.write(`bench: clean-up failed: ${String(error)}\n`);
      }
    }
  }
}

export interface Service {
  readonly child: ChildProcess;
  /** Its stderr and stdout, for the error message when it does not come up. */
  readonly logFile: string;
  stop(): Promise<void>;
}

/** Starts a server process with its output in `logFile`; ready once `socket` accepts connections. */
export async function startService(
  cleanUp: CleanUp,
  command: string,
  args: readonly string[],
  options: { env: NodeJS.ProcessEnv; logFile: string; socket: string; timeoutMs?: number },
): Promise<Service> {
  const log = openSync(options.logFile, 'a');
  const child = spawn(command, args, { env: options.env, stdio: ['ignore', log, log] });
  let exited = false;
  const exit = new Promise<void>(resolve => child.once('exit', () => resolve()));
  void exit.then(() => (exited = true));
  const stop = async () => {
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exit;
    clearTimeout(timer);
  };
  cleanUp.push(stop);
  await waitUntil(`${command} to serve ${options.socket}`, options.timeoutMs ?? 30_000, async () => {
    if (exited) throw new Error(`exited before serving: ${tail(options.logFile)}`);
    return accepts(options.socket);
  });
  return { child, logFile: options.logFile, stop };
}

/** A benchmark client process for one target; cases go in one at a time. */
export interface Client {
  run(spec: CaseSpec): Promise<LoadResult>;
  /** Prepares and warms up, calls `atStart` once the client is ready, then runs. */
  runAfter(spec: CaseSpec, atStart: () => Promise<void>): Promise<LoadResult>;
}

export function startClient(cleanUp: CleanUp, target: Target, env: NodeJS.ProcessEnv): Client {
  const script = new URL('./client.ts', import.meta.url).pathname;
  const child = spawn(NODE, [script, JSON.stringify(target)], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  const replies = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exit = new Promise(resolve => child.once('exit', resolve));
  cleanUp.push(async () => {
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exit;
    clearTimeout(timer);
  });
  const reply = async () => {
    const next = await replies.next();
    if (next.done === true) throw new Error(`the client for ${target.kind} exited without an answer`);
    return JSON.parse(next.value) as unknown;
  };
  return {
    async run(spec) {
      child.stdin.write(JSON.stringify(spec) + '\n');
      return (await reply()) as LoadResult;
    },
    async runAfter(spec, atStart) {
      child.stdin.write(JSON.stringify({ ...spec, waitForGo: true }) + '\n');
      await reply();
      await atStart();
      child.stdin.write('go\n');
      return (await reply()) as LoadResult;
    },
  };
}

/** Polls `condition` every 50 ms until it holds, for at most `timeoutMs`. */
export async function waitUntil(
  what: string,
  timeoutMs: number,
  condition: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, POLL_MS));
  }
}

function accepts(socket: string): Promise<boolean> {
  return new Promise(resolve => {
    const connection = connect(socket);
    connection.once('connect', () => {
      connection.destroy();
      resolve(true);
    });
    connection.once('error', () => resolve(false));
  });
}

/** GET over the broker's admin unix socket. */
export function adminGet(socket: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const call = request({ socketPath: socket, path, timeout: 5000 }, response => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        response.statusCode === 200
          ? resolve(Buffer.concat(chunks).toString())
          : reject(new Error(`admin ${path}: HTTP ${response.statusCode}`)),
      );
    });
    call.on('error', reject);
    call.end();
  });
}

function tail(file: string): string {
  return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
}
