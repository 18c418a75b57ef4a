// A write key version made for another mechanism than the config names gives way at start:
// to a newer version that fits (an HSM administrator created it), else to one created then,
// else start-up stops naming the fix. The old version stays, ended for writes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KeyVersionInfo } from '../../src/backends/kek.ts';
import { reconcileListing } from '../../src/broker/state/reconcile.ts';
import { createLogger } from '../../src/log.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { memoryLog } from '../helpers/memory-log.ts';

const NOW = new Date('2026-12-07T12:00:00Z');
const REFUSAL = 'is an AES key for encrypt/decrypt, which cannot write with mechanism rsa-oaep';
const stored = {
  writeVersion: '1',
  versions: [
    { version: '1', fingerprint: 'f1', createdAt: '2026-01-01T00:00:00.000Z', state: 'active' as const },
  ],
};

function reconcile(listed: KeyVersionInfo[], options: { create: boolean; autoCreate?: boolean }) {
  const backend = new MemoryBackend({ name: 'hsm', versions: 1, autoCreate: options.autoCreate ?? true });
  const log = memoryLog();
  const result = reconcileListing('hsm', backend, stored, listed, NOW, {
    create: options.create,
    logger: createLogger('info', log.stream),
  });
  return { result, backend, log };
}

describe('reconcile: a write version of another mechanism', () => {
  it('keeps a write version that fits', async () => {
    const { result, backend } = reconcile([{ version: '1', fingerprint: 'f1' }], { create: true });
    assert.deepEqual((await result).backend, stored);
    assert.equal(backend.calls.createVersion, 0);
  });

  it('moves writes to the newest later version that fits, without creating one', async () => {
    const listed = [
      { version: '1', fingerprint: 'f1', writeRefusal: REFUSAL },
      { version: '2', fingerprint: 'f2' },
      { version: '3', fingerprint: 'f3', writeRefusal: REFUSAL },
    ];
    const { result, backend, log } = reconcile(listed, { create: true });
    const { backend: merged, changed } = await result;
    assert.ok(changed);
    assert.equal(merged.writeVersion, '2');
    assert.equal(merged.versions.find(version => version.version === '1')?.writeEndedAt, NOW.toISOString());
    assert.deepEqual(
      merged.versions.map(version => version.version),
      ['1', '2', '3'],
    );
    assert.equal(backend.calls.createVersion, 0);
    assert.match(log.text(), /made for another mechanism/);
  });

  it('creates a version for the new mechanism when start-up may', async () => {
    const { result, backend } = reconcile([{ version: '1', fingerprint: 'f1', writeRefusal: REFUSAL }], {
      create: true,
    });
    const { backend: merged } = await result;
    assert.equal(backend.calls.createVersion, 1);
    assert.equal(merged.writeVersion, '2');
    assert.deepEqual(
      merged.versions.map(version => [version.version, version.writeEndedAt]),
      [
        ['1', NOW.toISOString()],
        ['2', undefined],
      ],
    );
  });

  for (const options of [{ create: false }, { create: true, autoCreate: false }]) {
    it(`stops with the fix when it may not create one (${JSON.stringify(options)})`, async () => {
      const { result, backend } = reconcile(
        [{ version: '1', fingerprint: 'f1', writeRefusal: REFUSAL }],
        options,
      );
      await assert.rejects(result, {
        code: 'KEY_MECHANISM_MISMATCH',
        message: `backend hsm: write key version 1 ${REFUSAL}; set autoCreate: true to create the next version for it at start, or create that version in the memory service`,
      });
      assert.equal(backend.calls.createVersion, 0);
    });
  }
});
