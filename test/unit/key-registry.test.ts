// The key registry (which version writes, which key_id that makes) and the reconciliation
// of the state file with what a backend lists.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KeyVersionInfo } from '../../src/backends/kek.ts';
import { deriveKeyId } from '../../src/broker/keys/key-id.ts';
import { KeyRegistry } from '../../src/broker/keys/key-registry.ts';
import { reconcileBackend } from '../../src/broker/state/reconcile.ts';
import type { BrokerState, StoredVersion } from '../../src/broker/state/state-schema.ts';
import { brokerError } from './expect-error.ts';

const now = new Date('2025-06-01T12:00:00.000Z');
const T1 = '2025-01-01T00:00:00.000Z';

function stored(version: string, fingerprint = `fp-${version}`): StoredVersion {
  return { version, fingerprint, createdAt: T1, state: 'active' };
}

function listed(version: string, fingerprint = `fp-${version}`): KeyVersionInfo {
  return { version, fingerprint, createdAt: T1 };
}

const state: BrokerState = {
  format: 1,
  generation: 0,
  backends: {
    primary: { writeVersion: '2', versions: [{ ...stored('1'), writeEndedAt: T1 }, stored('2')] },
    secondary: { writeVersion: '1', versions: [stored('1', 'other-fp')] },
  },
};

describe('KeyRegistry', () => {
  it('takes key_id and write key from the first backend in write order', () => {
    const registry = new KeyRegistry(state, { order: ['primary', 'secondary'], wrap: 'first' });
    const writeKey = { backend: 'primary', version: '2', fingerprint: 'fp-2' };
    assert.deepEqual(registry.current, {
      keyId: deriveKeyId([writeKey], 0),
      wrap: 'first',
      writeKeys: [writeKey],
      escrowKeys: [],
    });

    const other = new KeyRegistry(state, { order: ['secondary', 'primary'], wrap: 'first' });
    assert.equal(other.current.writeKeys[0]?.backend, 'secondary');
    assert.notEqual(other.current.keyId, registry.current.keyId);
  });

  it('keeps an escrow key out of the writers in either mode, yet in key_id, and never lets it write', () => {
    const withEscrow = structuredClone(state);
    withEscrow.backends.vault = {
      writeVersion: 'ab12cd34',
      versions: [
        {
          version: 'ab12cd34',
          fingerprint: 'escrow:fp',
          state: 'active',
          createdAt: '2026-01-01T00:00:00.000Z',
        },
      ],
    };
    const escrowKey = { backend: 'vault', version: 'ab12cd34', fingerprint: 'escrow:fp' };
    const writeOnly = new Set(['vault']);
    // Listed first: still not the writer of wrap: first.
    const first = new KeyRegistry(
      withEscrow,
      { order: ['vault', 'secondary', 'primary'], wrap: 'first' },
      writeOnly,
    );
    assert.deepEqual(
      first.current.writeKeys.map(key => key.backend),
      ['secondary'],
    );
    assert.deepEqual(first.current.escrowKeys, [escrowKey]);
    assert.equal(first.current.keyId, deriveKeyId([...first.current.writeKeys, escrowKey], 0));
    const all = new KeyRegistry(
      withEscrow,
      { order: ['primary', 'vault', 'secondary'], wrap: 'all' },
      writeOnly,
    );
    assert.deepEqual(
      all.current.writeKeys.map(key => key.backend),
      ['primary', 'secondary'],
    );
    assert.deepEqual(all.current.escrowKeys, [escrowKey]);
    assert.ok(all.isWriteOnly('vault') && !all.isWriteOnly('primary'));
    assert.throws(
      () => new KeyRegistry(withEscrow, { order: ['vault'], wrap: 'all' }, writeOnly),
      brokerError('KEY_MISSING', 'that can unwrap'),
    );
  });

  it('includes the generation in key_id', () => {
    const bumped = new KeyRegistry({ ...state, generation: 1 }, { order: ['primary'], wrap: 'first' });
    assert.notEqual(
      bumped.current.keyId,
      new KeyRegistry(state, { order: ['primary'], wrap: 'first' }).current.keyId,
    );
  });

  it('leaves out a backend whose keys are not known yet, and refuses an order with none known', () => {
    const first = new KeyRegistry(state, { order: ['missing', 'primary'], wrap: 'first' });
    assert.deepEqual(
      first.current.writeKeys.map(key => key.backend),
      ['primary'],
    );
    const all = new KeyRegistry(state, { order: ['primary', 'missing', 'secondary'], wrap: 'all' });
    assert.equal(
      all.current.keyId,
      new KeyRegistry(state, { order: ['primary', 'secondary'], wrap: 'all' }).current.keyId,
    );
    assert.throws(
      () => new KeyRegistry(state, { order: ['missing'], wrap: 'first' }),
      brokerError('KEY_MISSING', 'no backend of the failover order'),
    );
    assert.throws(() => new KeyRegistry(state, { order: [], wrap: 'first' }), brokerError('KEY_MISSING'));
  });

  it('with wrap: all, derives key_id from every backend in order', () => {
    const all = new KeyRegistry(state, { order: ['primary', 'secondary'], wrap: 'all' });
    assert.deepEqual(
      all.current.writeKeys.map(key => key.backend),
      ['primary', 'secondary'],
    );
    const first = new KeyRegistry(state, { order: ['primary', 'secondary'], wrap: 'first' });
    assert.notEqual(all.current.keyId, first.current.keyId);
  });

  it('setFailover changes key_id and records the setting with what it replaced', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    const before = registry.current.keyId;
    registry.setFailover(
      { order: ['secondary', 'primary'], wrap: 'first' },
      { order: ['primary'], wrap: 'first' },
    );
    assert.notEqual(registry.current.keyId, before);
    assert.deepEqual(registry.toState().failover, {
      current: { order: ['secondary', 'primary'], wrap: 'first' },
      basedOn: { order: ['primary'], wrap: 'first' },
    });
    assert.throws(
      () => registry.setFailover({ order: ['missing'], wrap: 'first' }, registry.failover),
      brokerError('KEY_MISSING'),
    );
    assert.deepEqual(
      registry.failover,
      { order: ['secondary', 'primary'], wrap: 'first' },
      'a refused change leaves the setting',
    );
  });

  it('setVersionState retires and restores, and refuses an unknown version', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    registry.setVersionState('primary', '1', 'retired');
    assert.equal(registry.version('primary', '1')?.state, 'retired');
    registry.setVersionState('primary', '1', 'active');
    assert.equal(registry.version('primary', '1')?.state, 'active');
    assert.throws(() => registry.setVersionState('primary', '9', 'retired'), brokerError('NOT_FOUND'));
  });

  it('addUsage adds counts and keeps the latest time', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    registry.addUsage('primary', '1', 3, '2026-01-02T00:00:00.000Z');
    registry.addUsage('primary', '1', 2, '2026-01-01T00:00:00.000Z');
    assert.equal(registry.version('primary', '1')?.decryptCount, 5);
    assert.equal(registry.version('primary', '1')?.lastDecryptAt, '2026-01-02T00:00:00.000Z');
  });

  it('setWriteVersion makes the new version write and changes key_id', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    const before = registry.current.keyId;
    registry.setWriteVersion('primary', { version: '3', fingerprint: 'fp-3' }, now);
    assert.equal(registry.current.writeKeys[0]?.version, '3');
    assert.notEqual(registry.current.keyId, before);
    assert.deepEqual(registry.version('primary', '3'), {
      version: '3',
      fingerprint: 'fp-3',
      createdAt: now.toISOString(),
      state: 'active',
    });
    // Older versions stay readable; the one that wrote until now says so.
    assert.deepEqual(registry.version('primary', '1'), { ...stored('1'), writeEndedAt: T1 });
    assert.deepEqual(registry.version('primary', '2'), { ...stored('2'), writeEndedAt: now.toISOString() });
    assert.equal(registry.toState().backends.primary?.writeVersion, '3');
  });

  it('gives versions of an older state that do not write the load time as the end of their writes', () => {
    const legacy = structuredClone(state);
    delete legacy.backends.primary?.versions[0]?.writeEndedAt;
    const registry = new KeyRegistry(legacy, { order: ['primary'], wrap: 'first' }, new Set(), now);
    assert.equal(registry.version('primary', '1')?.writeEndedAt, now.toISOString());
    assert.equal(
      registry.version('primary', '2')?.writeEndedAt,
      undefined,
      'the write version has not ended',
    );
  });

  it('setWriteVersion keeps a backend-provided createdAt and can add a first version', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    registry.setWriteVersion('fresh', { version: '1', fingerprint: 'f', createdAt: T1 }, now);
    assert.deepEqual(registry.toState().backends.fresh, {
      writeVersion: '1',
      versions: [{ version: '1', fingerprint: 'f', createdAt: T1, state: 'active' }],
    });
  });

  it('setWriteVersion promotes a version it already lists instead of adding it twice', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    registry.setWriteVersion('primary', { version: '1', fingerprint: 'fp-1' }, now);
    assert.equal(registry.writeVersion('primary')?.version, '1');
    assert.equal(registry.toState().backends.primary?.versions.length, 2);
  });

  it('setWriteVersion refuses a listed version whose identity changed', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    assert.throws(
      () => registry.setWriteVersion('primary', { version: '1', fingerprint: 'recreated' }, now),
      brokerError('STATE_MISMATCH', 'key version 1 has a different identity'),
    );
    assert.equal(registry.writeVersion('primary')?.version, '2');
  });

  it('hands out copies: mutating toState() or the constructor input does not reach the registry', () => {
    const input = structuredClone(state);
    const registry = new KeyRegistry(input, { order: ['primary'], wrap: 'first' });
    const keyId = registry.current.keyId;
    const copy = registry.toState();
    copy.generation = 99;
    (copy.backends.primary as BrokerState['backends'][string]).writeVersion = '1';
    input.generation = 42;
    delete input.backends.primary;
    assert.deepEqual(registry.toState(), state);
    assert.equal(registry.current.keyId, keyId);
  });

  it('replace() switches to a new state and re-derives key_id', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    const next = structuredClone(state);
    (next.backends.primary as BrokerState['backends'][string]).writeVersion = '1';
    registry.replace(next, { order: ['primary'], wrap: 'first' });
    assert.equal(registry.current.writeKeys[0]?.version, '1');
    assert.equal(
      registry.current.keyId,
      new KeyRegistry(next, { order: ['primary'], wrap: 'first' }).current.keyId,
    );
  });

  it('version() finds stored versions and nothing else', () => {
    const registry = new KeyRegistry(state, { order: ['primary'], wrap: 'first' });
    assert.deepEqual(registry.version('secondary', '1'), stored('1', 'other-fp'));
    assert.equal(registry.version('primary', '9'), undefined);
    assert.equal(registry.version('nobody', '1'), undefined);
  });
});

describe('reconcileBackend', () => {
  const primary = state.backends.primary as BrokerState['backends'][string];

  it('returns undefined when neither the state nor the backend knows a version', () => {
    assert.equal(reconcileBackend('primary', undefined, [], now), undefined);
  });

  it('adopts everything listed when nothing is stored; the latest listed version writes', () => {
    const result = reconcileBackend(
      'primary',
      undefined,
      [listed('1'), { version: '2', fingerprint: 'fp-2' }],
      now,
    );
    assert.deepEqual(result, {
      backend: {
        writeVersion: '2',
        versions: [
          stored('1'),
          { version: '2', fingerprint: 'fp-2', createdAt: now.toISOString(), state: 'active' },
        ],
      },
      changed: true,
      missing: [],
    });
  });

  it('adopts extra listed versions as active without changing the write version', () => {
    const result = reconcileBackend('primary', primary, [listed('1'), listed('2'), listed('3')], now);
    assert.deepEqual(result, {
      backend: {
        writeVersion: '2',
        versions: [{ ...stored('1'), writeEndedAt: T1 }, stored('2'), stored('3')],
      },
      changed: true,
      missing: [],
    });
  });

  it('reports no change when the backend lists exactly what is stored', () => {
    const result = reconcileBackend('primary', primary, [listed('1'), listed('2')], now);
    assert.deepEqual(result, { backend: primary, changed: false, missing: [] });
  });

  it('keeps an older version the backend no longer lists, and reports it as missing', () => {
    const result = reconcileBackend('primary', primary, [listed('2')], now);
    assert.deepEqual(result, { backend: primary, changed: false, missing: ['1'] });
  });

  it('keeps a stored retired version as it is', () => {
    const withRetired = {
      writeVersion: '2',
      versions: [{ ...stored('1'), state: 'retired' as const }, stored('2')],
    };
    const result = reconcileBackend('primary', withRetired, [listed('1'), listed('2')], now);
    assert.deepEqual(result, { backend: withRetired, changed: false, missing: [] });
  });

  it('refuses with STATE_MISMATCH when the stored write version is not listed', () => {
    assert.throws(
      () => reconcileBackend('primary', primary, [listed('1')], now),
      brokerError('STATE_MISMATCH', 'backend primary: the state says version 2 writes'),
    );
    assert.throws(() => reconcileBackend('primary', primary, [], now), brokerError('STATE_MISMATCH'));
  });

  it('lets a replaced escrow key write in place of the one it replaced, keeping the old one recorded', () => {
    const result = reconcileBackend('primary', primary, [listed('3')], now, { replaceable: true });
    assert.deepEqual(result, {
      backend: {
        writeVersion: '3',
        versions: [
          { ...stored('1'), writeEndedAt: T1 },
          { ...stored('2'), writeEndedAt: now.toISOString() },
          stored('3'),
        ],
      },
      changed: true,
      missing: ['1', '2'],
    });
  });

  it('refuses with STATE_MISMATCH when a listed version has a different fingerprint', () => {
    for (const version of ['1', '2']) {
      const others = [listed('1'), listed('2')].map(info =>
        info.version === version ? { ...info, fingerprint: 'recreated' } : info,
      );
      assert.throws(
        () => reconcileBackend('primary', primary, others, now),
        brokerError('STATE_MISMATCH', `key version ${version} has a different identity`),
      );
    }
  });
});
