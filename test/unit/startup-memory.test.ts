// The memory-reducing collection `serve` runs once it serves: it must really reduce (a plain
// full collection keeps the young generation start-up widened), and must not leave a `gc`
// function on the broker's global for any module to call.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { releaseStartupMemory } from '../../src/startup-memory.ts';

const startupMemory = new URL('../../src/startup-memory.ts', import.meta.url).href;

/** Runs a script in a fresh process with serve's young-generation cap; its stdout as JSON. */
function inFreshProcess(script: string): Record<string, unknown> {
  const run = spawnSync(process.execPath, ['--max-semi-space-size=4', '--input-type=module', '-e', script], {
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

describe('releaseStartupMemory', () => {
  it('shrinks the young generation start-up garbage widened, and leaves no gc on the global', () => {
    const result = inFreshProcess(`
      import { getHeapSpaceStatistics } from 'node:v8';
      import { releaseStartupMemory } from ${JSON.stringify(startupMemory)};
      const youngMb = () => getHeapSpaceStatistics().find(s => s.space_name === 'new_space').space_size / 2 ** 20;
      let garbage = [];
      for (let i = 0; i < 2e6; i++) { garbage.push({ i, text: 'x' + i }); if (garbage.length > 5000) garbage = []; }
      const before = youngMb();
      const pauseMs = releaseStartupMemory();
      console.log(JSON.stringify({ before, after: youngMb(), pauseMs, gc: typeof globalThis.gc }));
    `);
    assert.equal(result.before, 8, 'start-up-like churn widens the young generation to its 4 MB cap');
    assert.ok((result.after as number) <= 2, `young generation after: ${String(result.after)} MB`);
    assert.equal(typeof result.pauseMs, 'number');
    assert.equal(result.gc, 'undefined');
  });

  it('asks V8 for its memory-reducing flavour, and does nothing without a collector', () => {
    const calls: unknown[] = [];
    assert.equal(typeof releaseStartupMemory(options => calls.push(options)), 'number');
    assert.deepEqual(calls, [{ type: 'major', flavor: 'last-resort' }]);
    assert.equal(releaseStartupMemory(null), undefined);
  });
});
