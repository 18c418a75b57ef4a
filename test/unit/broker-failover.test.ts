// The broker core's health and failover on in-memory backends: breakers fed by probes and
// calls, Status health, the writer switch of `wrap: first`, and the healing of thin seeds
// under `wrap: all`.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { memoryStateStore, startCore, withCore, until, type Core } from '../helpers/core-broker.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { brokerError } from './expect-error.ts';

const uid = 'unit';

function backendOf(core: Core, name: string): MemoryBackend {
  const backend = core.backends.get(name);
  assert.ok(backend !== undefined);
  return backend;
}

function breakerOf(core: Core, name: string): string | undefined {
  return core.broker.admin.backends().find(view => view.name === name)?.breaker;
}

describe('broker core: health', () => {
  it('opens a breaker on a failed probe, names the backend in Status, and closes it on recovery', async () => {
    await withCore({ wrap: 'first' }, async core => {
      assert.equal(core.broker.kms.status().healthz, 'ok');
      backendOf(core, 'hsm').failAll();
      await core.broker.probeNow();
      assert.equal(breakerOf(core, 'hsm'), 'open');
      assert.match(core.broker.kms.status().healthz, /^unhealthy backends: hsm \(MEMORY_DOWN\)$/);
      assert.deepEqual(core.broker.admin.status().degraded, ['hsm']);
      backendOf(core, 'hsm').heal();
      await core.broker.probeNow();
      assert.equal(breakerOf(core, 'hsm'), 'closed');
    });
  });

  it('opens a breaker from failed calls, and counts the failures by reason', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      backendOf(core, 'vault').fail('wrap');
      await core.broker.kms.encrypt(randomBytes(32), { uid });
      const vault = core.broker.admin.backends().find(view => view.name === 'vault');
      assert.equal(vault?.breaker, 'open');
      assert.deepEqual(vault?.errors, { MEMORY_DOWN: 1 });
      // With wrap: all, one writer alive is enough: Status stays ok.
      assert.equal(core.broker.kms.status().healthz, 'ok');
    });
  });

  it('answers UNAVAILABLE when every writer is down, and DEADLINE_EXCEEDED when one hangs past the deadline', async () => {
    await withCore({ wrap: 'first' }, async core => {
      const hsm = backendOf(core, 'hsm');
      hsm.fail('wrap');
      await assert.rejects(
        core.broker.kms.encrypt(randomBytes(32), { uid }),
        brokerError('BACKEND_UNAVAILABLE'),
      );
      hsm.fail('wrap', 'hang');
      await assert.rejects(
        core.broker.kms.encrypt(randomBytes(32), { uid, deadline: Date.now() + 200 }),
        brokerError('DEADLINE_EXCEEDED'),
      );
    });
  });
});

describe('broker core: wrap: first', () => {
  it('moves writes to the next healthy backend, then back once the first is healthy again', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'first' }, async core => {
      const onHsm = core.broker.kms.status().keyId;
      backendOf(core, 'hsm').failAll();
      await core.broker.probeNow();
      const onVault = await until(
        () => core.broker.kms.status().keyId,
        keyId => keyId !== onHsm,
        'writes moved to vault',
      );
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      assert.equal(sealed.keyId, onVault);
      assert.equal(core.broker.kms.status().healthz, 'ok');

      backendOf(core, 'hsm').heal();
      // The first good probe closes the breaker; with no hysteresis, the round after it moves
      // writes back.
      await core.broker.probeNow();
      await core.broker.probeNow();
      const back = await until(
        () => core.broker.kms.status().keyId,
        keyId => keyId !== onVault,
        'writes moved back to hsm',
      );
      assert.notEqual(back, onHsm, 'a return to a backend must not reuse its old key_id');
      assert.deepEqual(core.broker.admin.status().writeVersions, { hsm: '1', vault: '1' });
    });
  });
});

describe('broker core: wrap: all', () => {
  it('writes a thin envelope while a backend is down, reports it, and heals with a new key_id', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const vault = backendOf(core, 'vault');
      vault.failAll();
      await core.broker.probeNow();
      const thin = await core.broker.kms.encrypt(randomBytes(32), { uid });
      assert.deepEqual(thin.annotations, {});
      assert.deepEqual(core.broker.admin.status().underReplicatedKeyIds, [thin.keyId]);

      vault.heal();
      await core.broker.probeNow();
      await core.broker.probeNow();
      const healed = await until(
        () => core.broker.kms.status().keyId,
        keyId => keyId !== thin.keyId,
        'a new key_id after healing',
      );
      const full = await core.broker.kms.encrypt(randomBytes(32), { uid });
      assert.equal(full.keyId, healed);
      assert.equal(Object.keys(full.annotations).length, 1);
      assert.ok(
        core.log.records().some(record => String(record.reason).startsWith('heal an under-replicated seed')),
      );
    });
  });

  it('remembers a thin seed across a restart, and heals it when the backend is back', async () => {
    const store = memoryStateStore();
    const [hsm, vault] = [
      new MemoryBackend({ name: 'hsm', versions: 1 }),
      new MemoryBackend({ name: 'vault', versions: 1 }),
    ];
    const first = await startCore({ backends: [hsm, vault], store });
    vault.failAll();
    await first.broker.probeNow();
    const thin = await first.broker.kms.encrypt(randomBytes(32), { uid });
    await first.close();
    assert.deepEqual(
      store.current()?.thinSeeds?.map(seed => [seed.keyId, seed.missing]),
      [[thin.keyId, ['vault']]],
    );
    vault.heal();
    await withCore({ backends: [hsm, vault], store }, async core => {
      assert.deepEqual(core.broker.admin.status().underReplicatedKeyIds, [thin.keyId]);
      await core.broker.probeNow();
      await until(
        () => core.broker.kms.status().keyId,
        keyId => keyId !== thin.keyId,
        'the remembered thin seed healed',
      );
    });
  });

  it('lets a load spike that timed out one wrap cost no re-seed within the hysteresis', async () => {
    const config = {
      health: { probeIntervalMs: 3600000, failureThreshold: 3, openCooldownMs: 600000 },
      failover: { order: ['hsm', 'vault'], wrap: 'all', hysteresisMs: 60000 },
    };
    await withCore({ names: ['hsm', 'vault'], wrap: 'all', config }, async core => {
      const vault = backendOf(core, 'vault');
      vault.fail('wrap', 'hang');
      const thin = await core.broker.kms.encrypt(randomBytes(32), { uid, deadline: Date.now() + 300 });
      assert.deepEqual(thin.annotations, {});
      vault.heal();
      await core.broker.probeNow();
      await core.broker.probeNow();
      assert.equal(core.broker.kms.status().keyId, thin.keyId, 'key_id changed right after a busy moment');
      assert.deepEqual(core.broker.admin.status().underReplicatedKeyIds, [thin.keyId]);
    });
  });

  it('keeps key_id while a backend is down: it derives from the configured set, not from health', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const keyId = core.broker.kms.status().keyId;
      backendOf(core, 'hsm').failAll();
      await core.broker.probeNow();
      assert.equal(core.broker.kms.status().keyId, keyId);
      assert.equal((await core.broker.kms.encrypt(randomBytes(32), { uid })).keyId, keyId);
    });
  });

  it('changes the failover order at run time under its ETag, and refuses a stale one', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const { etag } = core.broker.admin.failover();
      const result = await core.broker.admin.setFailover({ order: ['vault', 'hsm'], wrap: 'first' }, etag);
      assert.deepEqual(result.after, { order: ['vault', 'hsm'], wrap: 'first' });
      assert.equal(core.broker.kms.status().keyId, result.keyId);
      await assert.rejects(
        core.broker.admin.setFailover({ order: ['hsm'], wrap: 'all' }, etag),
        brokerError('PRECONDITION_FAILED'),
      );
      await assert.rejects(
        core.broker.admin.setFailover(
          { order: ['hsm', 'nope'], wrap: 'all' },
          core.broker.admin.failover().etag,
        ),
        brokerError('INVALID_REQUEST', "'nope'"),
      );
    });
  });
});
