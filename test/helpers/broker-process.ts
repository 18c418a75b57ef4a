// Runs `kms-broker serve` as a real process, as kube-apiserver's host would, and reads its
// JSON log lines to know when it serves, rotates or stops: no sleeping on guesses.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export const CLI = new URL('../../bin/kms-broker', import.meta.url).pathname;

export interface LogRecord {
  readonly msg?: string;
  readonly [field: string]: unknown;
}

/** A warning, error or fatal record: the broker writes levels as words ("level":"warn"). */
export function isWarningOrWorse(record: LogRecord): boolean {
  return record['level'] === 'warn' || record['level'] === 'error' || record['level'] === 'fatal';
}

export interface BrokerProcess {
  readonly child: ChildProcess;
  readonly logs: LogRecord[];
  /** Raw stderr lines that are not JSON (e.g. fatal start-up messages). */
  readonly text: string[];
  readonly exited: Promise<number | null>;
  waitForLog(predicate: (record: LogRecord) => boolean, timeoutMs?: number): Promise<LogRecord>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Brokers still running; a test that fails half-way must not leave one behind. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Stops every broker still running (for `afterEach` in files whose tests own their brokers). */
export async function stopAllBrokers(): Promise<void> {
  await Promise.all(
    [...live].map(child => {
      const exited = new Promise(resolve => child.once('exit', resolve));
      child.kill('SIGKILL');
      return exited;
    }),
  );
}

export function spawnBroker(configPath: string, env: NodeJS.ProcessEnv): BrokerProcess {
  const child = spawn(CLI, ['serve', '--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  const logs: LogRecord[] = [];
  const text: string[] = [];
  const listeners = new Set<() => void>();
  const lines = createInterface({ input: child.stderr as NodeJS.ReadableStream });
  lines.on('line', line => {
    try {
      logs.push(JSON.parse(line) as LogRecord);
    } catch {
      text.push(line);
    }
    for (const listener of listeners) listener();
  });
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)));
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
    for (const listener of listeners) listener();
  });

  const waitForLog = (predicate: (record: LogRecord) => boolean, timeoutMs = 20000) =>
    new Promise<LogRecord>((resolve, reject) => {
      const check = () => {
        const found = logs.find(predicate);
        if (found !== undefined) return finish(() => resolve(found));
        if (hasExited)
          finish(() => reject(new Error(`broker exited before the expected log line: ${text.join('\n')}`)));
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error('timed out waiting for a log line'))),
        timeoutMs,
      );
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        settle();
      };
      listeners.add(check);
      check();
    });

  return {
    child,
    logs,
    text,
    exited,
    waitForLog,
    async stop(signal = 'SIGTERM') {
      if (!hasExited) child.kill(signal);
      return exited;
    },
  };
}

/** Starts a broker and resolves once it serves its socket and, when enabled, its admin API. */
export async function startBrokerProcess(configPath: string, env: NodeJS.ProcessEnv): Promise<BrokerProcess> {
  const broker = spawnBroker(configPath, env);
  try {
    await broker.waitForLog(record => record.msg === 'broker ready');
  } catch (error) {
    await broker.stop('SIGKILL');
    throw error;
  }
  return broker;
}
