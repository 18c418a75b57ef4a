// Runs one kms-broker CLI command to its end, as an operator's shell would, and gives back its
// exit code and output. Bounded in time: a command that hangs is killed and fails the test.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { UsageScan } from '../../src/broker/usage-scan.ts';
import { CLI } from './broker-process.ts';

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(
  args: readonly string[],
  options: {
    readonly timeoutMs?: number;
    readonly env?: NodeJS.ProcessEnv;
    /** Written to the command's stdin, which is then closed. */
    readonly input?: Buffer;
  } = {},
): Promise<CliRun> {
  return new Promise(resolve => {
    const child = execFile(
      CLI,
      args,
      { timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, env: options.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/**
 * What `kms-broker usage --no-record --json` finds in a test etcd: how its Secrets are stored
 * (formats counted by kind), and the broker's wrap sets.
 */
export async function scanSecrets(
  etcdUrl: string,
): Promise<{ formats: UsageScan['formats'] | undefined; wrapSets: UsageScan['wrapSets'] }> {
  const run = await runCli(['usage', '--no-record', '--json', '--etcd-endpoints', etcdUrl], {
    timeoutMs: 120_000,
  });
  assert.equal(run.code, 0, run.stderr);
  const scan = JSON.parse(run.stdout) as UsageScan;
  return {
    formats: scan.resources.find(entry => entry.resource === 'secrets')?.formats,
    wrapSets: scan.wrapSets,
  };
}
