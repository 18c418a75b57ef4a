// The PKCS#11 connection's recovery schedule: which step an attempt takes and when the
// next may start, on a fake clock.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  RECOVERY_BACKOFF_MAX_MS,
  RECOVERY_BACKOFF_MIN_MS,
  RecoverySchedule,
} from '../../src/backends/pkcs11/recovery-schedule.ts';

function clocked(): { schedule: RecoverySchedule; advance: (ms: number) => void } {
  let now = 1_000_000;
  return { schedule: new RecoverySchedule(() => now), advance: ms => (now += ms) };
}

describe('PKCS#11 recovery schedule', () => {
  it('mends a lost session or login by reconnecting first, and a device failure by a reset', () => {
    const { schedule } = clocked();
    assert.equal(schedule.broken, false);
    assert.equal(schedule.waitMs(), 0);
    assert.equal(schedule.step('session'), 'reconnect');
    assert.equal(schedule.step('login'), 'reconnect');
    assert.equal(schedule.step('device'), 'reset');
  });

  it('escalates to a library reset once an attempt failed', () => {
    const { schedule } = clocked();
    schedule.failed('CKR_GENERAL_ERROR');
    assert.equal(schedule.broken, true);
    assert.equal(schedule.cause, 'CKR_GENERAL_ERROR');
    assert.equal(schedule.step('session'), 'reset');
    assert.equal(schedule.step('login'), 'reset');
  });

  it('spaces failed attempts by a doubling backoff up to its cap', () => {
    const { schedule, advance } = clocked();
    const waits: number[] = [];
    for (let index = 0; index < 8; index++) {
      schedule.failed('CKR_GENERAL_ERROR');
      waits.push(schedule.waitMs());
      advance(schedule.waitMs());
      assert.equal(schedule.waitMs(), 0, 'due once the backoff has passed');
    }
    assert.deepEqual(waits, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    assert.equal(waits[0], RECOVERY_BACKOFF_MIN_MS);
    assert.equal(Math.max(...waits), RECOVERY_BACKOFF_MAX_MS);
  });

  it('starts over after a success', () => {
    const { schedule } = clocked();
    schedule.failed('HSM_TOKEN_NOT_FOUND');
    schedule.failed('HSM_TOKEN_NOT_FOUND');
    schedule.succeeded();
    assert.equal(schedule.broken, false);
    assert.equal(schedule.cause, undefined);
    assert.equal(schedule.waitMs(), 0);
    assert.equal(schedule.step('session'), 'reconnect');
    schedule.failed('CKR_DEVICE_ERROR');
    assert.equal(schedule.waitMs(), RECOVERY_BACKOFF_MIN_MS);
  });
});
