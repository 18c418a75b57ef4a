// How long a CLI command takes from exec to exit: `--version`, `status` against a running
// broker (its config file found by --config, as on a node) and `check-config`. The median of
// several runs, each a fresh process, so the figure is what an operator or a script waits.
// Run alone (`node bench/cli-start.ts [--cli PATH] [--runs N]`) it starts its own SoftHSM broker.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export interface CliStartResult {
  readonly command: string;
  readonly runs: number;
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
}

/** Exit codes that mean the command did its job (status: 5 is "degraded", still an answer). */
const ANSWERED = new Set([0, 5]);

export function timeCli(
  cli: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  runs: number,
  label = args[0] ?? '',
): CliStartResult {
  const times: number[] = [];
  for (let run = 0; run < runs; run++) {
    const started = process.hrtime.bigint();
    const result = spawnSync(cli, args, { env, encoding: 'utf8', timeout: 30_000 });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (result.status === null || !ANSWERED.has(result.status))
      throw new Error(`kms-broker ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
    times.push(ms);
  }
  const round = (ms: number) => Math.round(ms * 10) / 10;
  const sorted = times.toSorted((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
  return {
    command: label,
    runs,
    medianMs: round(median),
    minMs: round(Math.min(...times)),
    maxMs: round(Math.max(...times)),
  };
}

/**
 * The three commands, against a broker serving with the config at `configPath`, after the
 * floor: the same Node.js starting and doing nothing.
 */
export function measureCliStart(
  cli: string,
  configPath: string,
  env: NodeJS.ProcessEnv,
  runs: number,
): CliStartResult[] {
  const node = join(import.meta.dirname, '../node_modules/node/bin/node');
  return [
    timeCli(node, ['-e', '0'], env, runs, 'node -e 0'),
    timeCli(cli, ['--version'], env, runs),
    timeCli(cli, ['status', '--config', configPath], env, runs),
    timeCli(cli, ['check-config', '--config', configPath], env, runs),
  ];
}

if (import.meta.main) {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { writeConfig } = await import('../test/helpers/config.ts');
  const { createToken } = await import('../test/helpers/softhsm.ts');
  const { startBrokerProcess } = await import('../test/helpers/broker-process.ts');
  const argument = (flag: string) => {
    const index = process.argv.indexOf(flag);
    return index < 0 ? undefined : process.argv[index + 1];
  };
  const cli = argument('--cli') ?? join(import.meta.dirname, '../bin/kms-broker');
  const runs = Number(argument('--runs') ?? '15');
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-cli-start-'));
  const token = createToken('cli-start', join(dir, 'hsm'));
  const config = writeConfig(token, {}, dir);
  const broker = await startBrokerProcess(config.path, token.env);
  try {
    const commands = [
      ['--version'],
      ['status', '--config', config.path],
      ['check-config', '--config', config.path],
    ];
    for (const args of commands) {
      let result: CliStartResult;
      try {
        result = timeCli(cli, args, token.env, runs);
      } catch (error) {
        // An older CLI (--cli) may lack a command: its figure is missing, the others stand.
        process.stdout.write(`${args[0]}: ${(error as Error).message.split('\n')[0]}\n`);
        continue;
      }
      process.stdout.write(
        `${result.command.padEnd(12)} median ${result.medianMs} ms (min ${result.minMs}, max ${result.maxMs}, ${result.runs} runs)\n`,
      );
    }
  } finally {
    await broker.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
