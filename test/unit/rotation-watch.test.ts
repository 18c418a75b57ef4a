// The rotation watch adopts a service's new current version only once it has been seen
// unchanged for the stability window, and never moves the write version backwards.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KekBackend, KeyVersionInfo } from '../../src/backends/kek.ts';
import { RotationWatch } from '../../src/broker/keys/rotation-watch.ts';
import { createLogger } from '../../src/log.ts';
import { memoryLog } from '../helpers/memory-log.ts';

/** A scripted view of a service's current version; only `externalRotation` is consulted. */
function scripted(versions: () => KeyVersionInfo): KekBackend {
  return {
    name: 'svc',
    externalRotation: { intervalMs: 1000, stableForMs: 100, latest: () => Promise.resolve(versions()) },
  } as unknown as KekBackend;
}

function setup(latest: () => KeyVersionInfo) {
  let clock = 0;
  let write = { version: '2', createdAt: '2026-01-02T00:00:00.000Z' };
  const adopted: string[] = [];
  const watch = new RotationWatch({
    backends: [scripted(latest)],
    writeVersion: () => write,
    adopt: (_backend, info) => {
      adopted.push(info.version);
      write = { version: info.version, createdAt: info.createdAt ?? write.createdAt };
      return Promise.resolve();
    },
    logger: createLogger('info', memoryLog().stream),
    now: () => clock,
  });
  return { watch, adopted, advance: (ms: number) => (clock += ms) };
}

const v = (version: string): KeyVersionInfo => ({ version, fingerprint: `fp-${version}` });

describe('rotation watch', () => {
  it('adopts a new version only after it stayed current for the stability window', async () => {
    const { watch, adopted, advance } = setup(() => v('3'));
    assert.equal(await watch.check('svc'), undefined);
    advance(99);
    assert.equal(await watch.check('svc'), undefined);
    advance(1);
    assert.equal(await watch.check('svc'), '3');
    assert.deepEqual(adopted, ['3']);
    advance(1000);
    assert.equal(await watch.check('svc'), undefined, 'nothing more to adopt');
  });

  it('restarts the window when the current version changes again (no churn while it flaps)', async () => {
    let current = '3';
    const { watch, adopted, advance } = setup(() => v(current));
    await watch.check('svc');
    advance(80);
    current = '4';
    assert.equal(await watch.check('svc'), undefined);
    advance(80);
    assert.equal(await watch.check('svc'), undefined, 'version 4 has only been seen for 80 ms');
    advance(20);
    assert.equal(await watch.check('svc'), '4');
    assert.deepEqual(adopted, ['4']);
  });

  it('forgets a candidate that went away, and never adopts an older version', async () => {
    let current = '3';
    const { watch, adopted, advance } = setup(() => v(current));
    await watch.check('svc');
    current = '2';
    advance(500);
    assert.equal(await watch.check('svc'), undefined);
    current = '1';
    advance(500);
    assert.equal(await watch.check('svc'), undefined);
    advance(500);
    assert.equal(await watch.check('svc'), undefined);
    assert.deepEqual(adopted, []);
  });

  it('treats a failed poll as no news', async () => {
    const { watch, adopted } = setup(() => {
      throw new Error('unreachable');
    });
    assert.equal(await watch.check('svc'), undefined);
    assert.deepEqual(adopted, []);
  });
});
