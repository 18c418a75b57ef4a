// The broker core's key set on in-memory backends: key_id rules, rotation, adoption of a
// rotation done in the service, retirement and restoration, and how commits reach the store.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileStateStore } from '../../src/broker/state/file-state-store.ts';
import { isOwnKeyId } from '../../src/broker/keys/key-id.ts';
import { startCore, withCore, memoryStateStore, until, type Core } from '../helpers/core-broker.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { usageScan as scan } from '../helpers/usage-scans.ts';
import { brokerError } from './expect-error.ts';

const uid = 'unit';

async function roundTrip(core: Core): Promise<{ keyId: string; seed: Buffer; decrypted: Buffer }> {
  const seed = randomBytes(32);
  const sealed = await core.broker.kms.encrypt(seed, { uid });
  const decrypted = await core.broker.kms.decrypt(sealed, { uid });
  return { keyId: sealed.keyId, seed, decrypted };
}

describe('broker core: key_id', () => {
  it('advertises in Status the key_id that Encrypt returns, in our own format', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const { keyId, seed, decrypted } = await roundTrip(core);
      assert.equal(keyId, core.broker.kms.status().keyId);
      assert.ok(isOwnKeyId(keyId));
      assert.deepEqual(decrypted, seed);
    });
  });

  it('is the same on two brokers that see the same keys, and differs on other keys', async () => {
    const shared = new MemoryBackend({ name: 'hsm', versions: 1 });
    const first = await startCore({ backends: [shared] });
    const second = await startCore({ backends: [shared] });
    const other = await startCore({ names: ['hsm'] });
    try {
      assert.equal(first.broker.kms.status().keyId, second.broker.kms.status().keyId);
      assert.notEqual(first.broker.kms.status().keyId, other.broker.kms.status().keyId);
    } finally {
      await Promise.all([first.close(), second.close(), other.close()]);
    }
  });

  it('refuses a Decrypt whose key_id another plugin issued, before any backend call', async () => {
    await withCore({}, async core => {
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      const unwraps = core.backends.get('hsm')?.calls.unwrap;
      await assert.rejects(
        core.broker.kms.decrypt({ ...sealed, keyId: 'someone-else' }, { uid }),
        brokerError('INVALID_CIPHERTEXT', 'key_id'),
      );
      assert.equal(core.backends.get('hsm')?.calls.unwrap, unwraps);
    });
  });
});

describe('broker core: rotation', () => {
  it('makes the new version the write version, changes key_id, and keeps old data readable', async () => {
    await withCore({}, async core => {
      const before = await core.broker.kms.encrypt(Buffer.alloc(32, 1), { uid });
      const rotated = await core.broker.admin.rotate('hsm');
      assert.equal(rotated.version, '2');
      assert.notEqual(rotated.keyId, before.keyId);
      assert.equal(core.broker.kms.status().keyId, rotated.keyId);
      assert.deepEqual(await core.broker.kms.decrypt(before, { uid }), Buffer.alloc(32, 1));
      assert.deepEqual(
        core.broker.admin.keys().hsm?.map(version => [version.version, version.role]),
        [
          ['1', 'active'],
          ['2', 'write'],
        ],
      );
    });
  });

  it('lists the rotated backend once and no other backend', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const [hsm, vault] = [core.backends.get('hsm'), core.backends.get('vault')];
      const listedBefore = [hsm?.calls.listVersions, vault?.calls.listVersions];
      await core.broker.admin.rotate('hsm');
      assert.deepEqual(
        [hsm?.calls.listVersions, vault?.calls.listVersions],
        [(listedBefore[0] ?? 0) + 1, listedBefore[1]],
      );
    });
  });

  it('adopts, in the same commit, versions another process created meanwhile', async () => {
    await withCore({}, async core => {
      core.backends.get('hsm')?.addVersion(); // version 2, made elsewhere
      const rotated = await core.broker.admin.rotate('hsm');
      assert.equal(rotated.version, '3');
      assert.deepEqual(
        core.broker.admin.keys().hsm?.map(version => version.version),
        ['1', '2', '3'],
      );
    });
  });

  it('changes nothing when the state cannot be written, and says so', async () => {
    const store = memoryStateStore();
    const core = await startCore({ store });
    try {
      const keyId = core.broker.kms.status().keyId;
      store.failSaves('ENOSPC');
      await assert.rejects(core.broker.admin.rotate('hsm'), brokerError('STATE_WRITE_FAILED', 'ENOSPC'));
      assert.equal(core.broker.kms.status().keyId, keyId);
      assert.deepEqual(core.broker.admin.status().writeVersions, { hsm: '1' });
    } finally {
      store.failSaves(undefined);
      await core.close();
    }
  });

  it('adopts a rotation done in the service once it has been seen stable', async () => {
    const hsm = new MemoryBackend({
      name: 'hsm',
      versions: 1,
      externalRotation: { intervalMs: 20, stableForMs: 0 },
    });
    await withCore({ backends: [hsm] }, async core => {
      const keyId = core.broker.kms.status().keyId;
      hsm.addVersion();
      const adopted = await until(
        () => core.broker.admin.status().writeVersions.hsm,
        version => version === '2',
        'version 2 adopted',
      );
      assert.equal(adopted, '2');
      assert.notEqual(core.broker.kms.status().keyId, keyId);
    });
  });
});

describe('broker core: retirement', () => {
  it('refuses to retire the write version', async () => {
    await withCore({}, async core => {
      await assert.rejects(
        core.broker.admin.retire('hsm', '1', { force: false }),
        brokerError('VERSION_IN_USE', 'write version'),
      );
    });
  });

  it('refuses a version no scan has judged yet, and one a scan shows still needed, unless forced', async () => {
    await withCore({}, async core => {
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      await core.broker.admin.rotate('hsm');
      await assert.rejects(
        core.broker.admin.retire('hsm', '1', { force: false }),
        brokerError(
          'NO_USAGE_EVIDENCE',
          /stopped writing at \S+, and apiservers may write under it until \S+ .*no usage scan is recorded/,
        ),
      );
      assert.equal(core.broker.admin.rotation().stage, 're-seeding');
      // A scan that began before the version's last possible write proves nothing about it.
      await core.broker.admin.recordScan(scan(new Date(), [[{ backend: 'hsm', version: '2' }, 0]]));
      await assert.rejects(
        core.broker.admin.retire('hsm', '1', { force: false }),
        brokerError('NO_USAGE_EVIDENCE', /the usage scan of \S+ \(etcd revision 7\) began before it/),
      );
      assert.deepEqual(
        await core.broker.admin.retire('hsm', '1', { force: true }),
        { before: 'active', after: 'retired' },
        'force overrides missing evidence',
      );
      await assert.rejects(core.broker.kms.decrypt(sealed, { uid }), brokerError('KEY_VERSION_RETIRED'));
      await core.broker.admin.restore('hsm', '1');
      assert.equal((await core.broker.kms.decrypt(sealed, { uid })).length, 32);
    });
  });

  it('retires by the newest scan: refused while objects need the version alone, allowed once none does', async () => {
    await withCore(
      { names: ['hsm', 'vault'], config: { retirement: { scanAfterWriteMs: 0 } } },
      async core => {
        await core.broker.admin.rotate('hsm');
        const needed = scan(new Date(Date.now() + 1000), [
          [{ backend: 'hsm', version: '1' }, 5, { secrets: 4, configmaps: 1 }],
          // Also wrapped by vault's version 1: readable without hsm's version 1.
          [
            [
              { backend: 'hsm', version: '1' },
              { backend: 'vault', version: '1' },
            ],
            100,
          ],
        ]);
        await core.broker.admin.recordScan(needed);
        await assert.rejects(
          core.broker.admin.retire('hsm', '1', { force: false }),
          brokerError(
            'VERSION_IN_USE',
            /still needed by 5 stored objects with no other readable wrap \(secrets 4, configmaps 1\) in the usage scan of .*kms-broker migrate/,
          ),
        );
        assert.equal(core.broker.admin.rotation().stage, 'needed');
        // An older scan never replaces the newer evidence.
        await assert.rejects(
          core.broker.admin.recordScan({ ...needed, scannedAt: new Date(Date.now() - 60000).toISOString() }),
          brokerError('SCAN_OUTDATED'),
        );
        await assert.rejects(
          core.broker.admin.recordScan({
            ...needed,
            scannedAt: new Date(Date.now() + 3600000).toISOString(),
          }),
          brokerError('INVALID_REQUEST', 'in the future'),
        );
        await core.broker.admin.recordScan(
          scan(new Date(Date.now() + 2000), [
            [
              [
                { backend: 'hsm', version: '2' },
                { backend: 'vault', version: '1' },
              ],
              105,
            ],
          ]),
        );
        const rotation = core.broker.admin.rotation();
        assert.equal(rotation.stage, 'retirable');
        assert.deepEqual(
          rotation.versions.map(({ backend, version, stage }) => [backend, version, stage]),
          [['hsm', '1', 'retirable']],
        );
        assert.deepEqual(await core.broker.admin.retire('hsm', '1', { force: false }), {
          before: 'active',
          after: 'retired',
        });
        assert.equal(core.broker.admin.rotation().stage, 'steady');
        // Now vault's version 1 is the only readable wrap of what hsm's version 1 also wrapped.
        await core.broker.admin.rotate('vault');
        await core.broker.admin.recordScan(
          scan(new Date(Date.now() + 3000), [
            [
              [
                { backend: 'hsm', version: '1' },
                { backend: 'vault', version: '1' },
              ],
              3,
            ],
          ]),
        );
        await assert.rejects(
          core.broker.admin.retire('vault', '1', { force: false }),
          brokerError('VERSION_IN_USE', 'still needed by 3 stored objects'),
        );
      },
    );
  });

  it('will not call a version unneeded while the scan found values it could not decode', async () => {
    await withCore({ config: { retirement: { scanAfterWriteMs: 0 } } }, async core => {
      await core.broker.admin.rotate('hsm');
      await core.broker.admin.recordScan({
        ...scan(new Date(Date.now() + 1000), []),
        undecodable: { objects: 2, resources: { secrets: 2 } },
      });
      await assert.rejects(
        core.broker.admin.retire('hsm', '1', { force: false }),
        brokerError(
          'NO_USAGE_EVIDENCE',
          "found 2 values under the broker's provider that did not decode (secrets 2)",
        ),
      );
      assert.equal(core.broker.admin.usage().lastScan?.undecodable.objects, 2);
    });
  });

  it('answers NOT_FOUND for a version or backend it does not know', async () => {
    await withCore({}, async core => {
      await assert.rejects(core.broker.admin.retire('hsm', '9', { force: true }), brokerError('NOT_FOUND'));
      await assert.rejects(core.broker.admin.restore('nope', '1'), brokerError('NOT_FOUND'));
    });
  });
});

describe('broker core: state sync', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kmsb-core-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('never reloads its own commit as if another process wrote it', async () => {
    const path = join(root, 'own-writes.json');
    const core = await startCore({ names: ['hsm', 'vault'], store: fileStateStore(path) });
    // An observer on the same file hears every write; the broker's watcher polls the same file.
    let observed = 0;
    const stopObserver = fileStateStore(path).watch(() => observed++, 10);
    try {
      await core.broker.admin.rotate('hsm');
      const listed = [...core.backends.values()].map(backend => backend.calls.listVersions);
      await until(
        () => observed,
        count => count > 0,
        'the observer saw the rotation',
      );
      // Queued behind any reload the watch started: once it is refused, such a reload is done.
      await assert.rejects(core.broker.admin.restore('hsm', '99'), brokerError('NOT_FOUND'));
      assert.deepEqual(
        [...core.backends.values()].map(backend => backend.calls.listVersions),
        listed,
      );
    } finally {
      stopObserver();
      await core.close();
    }
  });

  it('reloads a change another writer made, and follows its key set', async () => {
    const store = memoryStateStore();
    await withCore({ store }, async core => {
      const state = store.current();
      assert.ok(state !== undefined);
      const hsm = core.backends.get('hsm');
      const created = hsm?.addVersion();
      assert.ok(created !== undefined);
      state.backends.hsm = {
        writeVersion: created.version,
        versions: [
          ...(state.backends.hsm?.versions ?? []),
          { ...created, createdAt: created.createdAt ?? '', state: 'active' },
        ],
      };
      const listed = hsm?.calls.listVersions ?? 0;
      store.writeAsAnother(state);
      await until(
        () => core.broker.admin.status().writeVersions.hsm,
        version => version === created.version,
        'the other writer’s version is adopted',
      );
      assert.equal(hsm?.calls.listVersions, listed + 1);
      assert.ok(core.log.records().some(record => record.msg === 'key set changed'));
    });
  });

  it('persists Decrypt usage at close, counted per version', async () => {
    const store = memoryStateStore();
    const core = await startCore({ store });
    const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
    await core.broker.kms.decrypt(sealed, { uid });
    await core.broker.kms.decrypt(sealed, { uid });
    await core.close();
    const version = store.current()?.backends.hsm?.versions[0];
    assert.equal(version?.decryptCount, 2);
    assert.ok(version?.lastDecryptAt !== undefined);
  });
});

describe('broker core: a change counts once its store took it', () => {
  it('Status keeps the old key_id while the save of a rotation is in flight, and the new one after', async () => {
    const memory = memoryStateStore();
    let release: (() => void) | undefined;
    let held = false;
    const keyIds: string[] = [];
    const store = {
      ...memory,
      location: memory.location,
      load: () => memory.load(),
      watch: (onChange: () => void, intervalMs: number) => memory.watch(onChange, intervalMs),
      async save(state: Parameters<typeof memory.save>[0], keyId?: string) {
        if (held) {
          keyIds.push(keyId ?? '');
          await new Promise<void>(resolve => (release = resolve));
        }
        return memory.save(state);
      },
    };
    await withCore({ store }, async core => {
      const before = core.broker.kms.status().keyId;
      held = true;
      const rotation = core.broker.admin.rotate('hsm');
      await until(
        () => release,
        found => found !== undefined,
        'the rotation saving',
      );
      assert.equal(core.broker.kms.status().keyId, before, 'not advertised before the store took it');
      (release as () => void)();
      const { keyId } = await rotation;
      assert.notEqual(keyId, before);
      assert.deepEqual(keyIds, [keyId], 'the store is told the key_id the change advertises');
      assert.equal(core.broker.kms.status().keyId, keyId);
    });
  });
});
