// The console's health history: one sample per probe (or breaker change), oldest first,
// bounded per backend, and nothing recorded while a backend's report stands still.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HealthHistory } from '../../src/admin/console/health-history.ts';
import type { BackendView } from '../../src/broker/ports.ts';

function view(lastProbeAt: string | undefined, changes: Partial<BackendView> = {}): BackendView {
  return {
    name: 'hsm',
    type: 'pkcs11',
    healthy: true,
    breaker: 'closed',
    errors: {},
    ...(lastProbeAt !== undefined && { lastProbeAt, lastProbeMs: 1.5 }),
    ...changes,
  };
}

describe('health history', () => {
  it('samples each new probe once, and a breaker change between probes at the time it was seen', () => {
    let current = view(undefined);
    const history = new HealthHistory(() => [current], 10);
    history.look(new Date('2026-01-01T00:00:00.000Z'));
    history.look(new Date('2026-01-01T00:00:01.000Z'));
    current = view('2026-01-01T00:00:02.000Z');
    history.look(new Date('2026-01-01T00:00:02.500Z'));
    history.look(new Date('2026-01-01T00:00:03.000Z'));
    current = view('2026-01-01T00:00:02.000Z', {
      healthy: false,
      breaker: 'open',
      reason: 'BACKEND_UNAVAILABLE',
    });
    history.look(new Date('2026-01-01T00:00:04.000Z'));
    assert.deepEqual(history.view(), {
      limit: 10,
      backends: {
        hsm: [
          { at: '2026-01-01T00:00:00.000Z', healthy: true, breaker: 'closed' },
          { at: '2026-01-01T00:00:02.000Z', healthy: true, breaker: 'closed', probeMs: 1.5 },
          {
            at: '2026-01-01T00:00:04.000Z',
            healthy: false,
            breaker: 'open',
            probeMs: 1.5,
            reason: 'BACKEND_UNAVAILABLE',
          },
        ],
      },
    });
  });

  it('keeps at most its limit per backend, dropping the oldest', () => {
    let second = 0;
    const history = new HealthHistory(
      () => [view(new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString())],
      3,
    );
    for (second = 0; second < 5; second++) history.look();
    const samples = history.view().backends.hsm ?? [];
    assert.deepEqual(
      samples.map(sample => sample.at),
      ['2026-01-01T00:00:02.000Z', '2026-01-01T00:00:03.000Z', '2026-01-01T00:00:04.000Z'],
    );
  });

  it('hands out copies: a caller cannot change what it keeps', () => {
    const history = new HealthHistory(() => [view('2026-01-01T00:00:00.000Z')]);
    history.look();
    history.view().backends.hsm?.splice(0);
    assert.equal(history.view().backends.hsm?.length, 1);
  });
});
