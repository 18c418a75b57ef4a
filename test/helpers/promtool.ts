// promtool for tests: the one scripts/build-promtool.sh built from the Go module proxy (a
// no-op when it is cached, as after scripts/test.sh), and a way to run it on files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const ROOT = new URL('../../', import.meta.url).pathname;

let cached: string | undefined;

/** The promtool binary's path; builds it first when it is not cached (minutes, once per machine). */
export function promtool(): string {
  if (cached !== undefined) return cached;
  const build = spawnSync('bash', ['scripts/build-promtool.sh'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 1_800_000,
  });
  const bin = /^promtool: bin=(.+)$/m.exec(build.stdout)?.[1];
  assert.ok(
    build.status === 0 && bin !== undefined,
    `scripts/build-promtool.sh failed:\n${build.stdout}${build.stderr}`,
  );
  cached = bin;
  return bin;
}

export interface PromtoolRun {
  readonly status: number | null;
  readonly output: string;
  readonly ms: number;
}

/** Runs promtool with these arguments in `cwd`, within two minutes. */
export function runPromtool(args: readonly string[], cwd: string): PromtoolRun {
  const started = performance.now();
  const run = spawnSync(promtool(), args, { cwd, encoding: 'utf8', timeout: 120_000 });
  return {
    status: run.status,
    output: `${run.stdout}${run.stderr}`,
    ms: Math.round(performance.now() - started),
  };
}
