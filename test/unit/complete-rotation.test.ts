// `rotate --complete` as a sequence of steps over fake ports: the order of the steps, the
// continuation of an unfinished rotation, the wait before a scan counts, and the three ends
// (retired, declined, stopped because the old version is still needed).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RotationView, VersionJudgement } from '../../src/broker/ports.ts';
import { completeRotation, type RotationPorts } from '../../src/rotation/complete-rotation.ts';

const T0 = Date.parse('2026-12-07T10:00:00.000Z');

interface World {
  /** Versions of hsm: the write one last. */
  versions: string[];
  retired: Set<string>;
  /** Objects still under each old version after the migration. */
  leftOver: number;
  clock: number;
  calls: string[];
  answer: boolean;
}

function world(overrides: Partial<World> = {}): World {
  return {
    versions: ['1'],
    retired: new Set(),
    leftOver: 0,
    clock: T0,
    calls: [],
    answer: true,
    ...overrides,
  };
}

function judgements(w: World, scanned: boolean): VersionJudgement[] {
  const write = w.versions.at(-1);
  return w.versions.map(version => {
    if (version === write) return { backend: 'hsm', version, stage: 'write' };
    if (w.retired.has(version)) return { backend: 'hsm', version, stage: 'retired' };
    const timing = {
      writeEndedAt: new Date(T0).toISOString(),
      scanNeededAfter: new Date(T0 + 90000).toISOString(),
    };
    if (!scanned) return { backend: 'hsm', version, stage: 're-seeding', ...timing };
    return w.leftOver > 0
      ? {
          backend: 'hsm',
          version,
          stage: 'needed',
          ...timing,
          neededBy: { objects: w.leftOver, resources: { secrets: w.leftOver } },
        }
      : { backend: 'hsm', version, stage: 'retirable', ...timing };
  });
}

function ports(w: World): RotationPorts & { lines: string[] } {
  let scanned = false;
  const lines: string[] = [];
  const old = () => judgements(w, scanned).filter(v => v.stage !== 'write' && v.stage !== 'retired');
  return {
    lines,
    rotation: () => {
      const view: RotationView = { keyId: `kbr1-${w.versions.at(-1)}`, stage: 'steady', versions: old() };
      return Promise.resolve(view);
    },
    rotate: backend => {
      w.calls.push(`rotate ${backend}`);
      w.versions.push(String(w.versions.length + 1));
      return Promise.resolve({ version: w.versions.at(-1) ?? '', keyId: `kbr1-${w.versions.at(-1)}` });
    },
    waitForReseed: keyId => {
      w.calls.push(`re-seed ${keyId}`);
      return Promise.resolve();
    },
    migrate: keyId => {
      w.calls.push(`migrate ${keyId}`);
      return Promise.resolve({ resources: ['secrets', 'configmaps'], mode: 'svm' });
    },
    scan: () => {
      w.calls.push(`scan at ${new Date(w.clock).toISOString()}`);
      scanned = w.clock >= T0 + 90000;
      return Promise.resolve({ scannedAt: new Date(w.clock).toISOString(), revision: '42', objects: 300 });
    },
    usage: () => Promise.resolve({ versions: judgements(w, scanned) }),
    retire: (backend, version) => {
      w.calls.push(`retire ${backend} ${version}`);
      w.retired.add(version);
      return Promise.resolve();
    },
    confirm: question => {
      w.calls.push(`confirm: ${question}`);
      return Promise.resolve(w.answer);
    },
    waitUntil: at => {
      w.calls.push(`wait until ${at.toISOString()}`);
      w.clock = at.getTime();
      return Promise.resolve();
    },
    now: () => new Date(w.clock),
    report: event => lines.push(`${event.step}: ${event.message}`),
  };
}

describe('rotate --complete', () => {
  it('rotates, waits for the re-seed, migrates, waits until a scan counts, scans, and retires after confirmation', async () => {
    const w = world();
    const p = ports(w);
    const outcome = await completeRotation('hsm', p, { yes: false });
    assert.deepEqual(w.calls, [
      'rotate hsm',
      're-seed kbr1-2',
      'migrate kbr1-2',
      'wait until 2026-12-07T10:01:30.000Z',
      'scan at 2026-12-07T10:01:30.000Z',
      'confirm: Retire version 1 of backend hsm? Data under it no longer decrypts (kms-broker restore undoes this).',
      'retire hsm 1',
    ]);
    assert.equal(outcome.result, 'retired');
    assert.deepEqual(outcome.retired, ['1']);
    assert.deepEqual(outcome.rotated, { version: '2', keyId: 'kbr1-2' });
    assert.equal(outcome.took.settle, 90000);
    assert.ok(p.lines.includes('scan: version 1 of backend hsm protects 0 stored objects: nothing needs it'));
    assert.ok(p.lines.includes('migrate: re-encrypted secrets, configmaps under the new key_id (svm)'));
  });

  it('continues an unfinished rotation without creating another version, and --yes asks nothing', async () => {
    const w = world({ versions: ['1', '2'], clock: T0 + 120000 });
    const p = ports(w);
    const outcome = await completeRotation('hsm', p, { yes: true });
    assert.equal(outcome.rotated, undefined);
    assert.deepEqual(w.calls, [
      're-seed kbr1-2',
      'migrate kbr1-2',
      'scan at 2026-12-07T10:02:00.000Z',
      'retire hsm 1',
    ]);
    assert.match(p.lines[0] ?? '', /continuing the unfinished rotation of hsm: version 1 not retired yet/);
  });

  it('stops without retiring while the scan shows objects under the old version, saying which', async () => {
    const w = world({ leftOver: 7 });
    const p = ports(w);
    const outcome = await completeRotation('hsm', p, { yes: true });
    assert.equal(outcome.result, 'stopped');
    assert.deepEqual(outcome.retired, []);
    assert.ok(!w.calls.some(call => call.startsWith('retire')));
    assert.ok(p.lines.some(line => /still protects 7 stored objects \(secrets 7\)/.test(line)));
  });

  it('retires nothing when the operator declines', async () => {
    const w = world({ answer: false });
    const outcome = await completeRotation('hsm', ports(w), { yes: false });
    assert.equal(outcome.result, 'declined');
    assert.ok(!w.calls.some(call => call.startsWith('retire')));
  });
});
