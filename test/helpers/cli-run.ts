// Runs one kms-broker CLI command to its end, as an operator's shell would, and gives back its
// exit code and output. Bounded in time: a command that hangs is killed and fails the test.
import { execFile } from 'node:child_process';
import { CLI } from './broker-process.ts';

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(
  args: readonly string[],
  options: { readonly timeoutMs?: number; readonly env?: NodeJS.ProcessEnv } = {},
): Promise<CliRun> {
  return new Promise(resolve => {
    execFile(
      CLI,
      args,
      { timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, env: options.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
