// The circuit breaker: opened by one failed probe or several failed calls, half-open after
// the cool-down, closed again by a success; and how long it has been closed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Breaker } from '../../src/broker/health/breaker.ts';

function breaker() {
  let clock = 1000;
  const subject = new Breaker({ failureThreshold: 3, openCooldownMs: 500, now: () => clock });
  return { subject, advance: (ms: number) => (clock += ms) };
}

describe('breaker', () => {
  it('opens at once on a failed probe', () => {
    const { subject } = breaker();
    subject.failure('probe');
    assert.equal(subject.state, 'open');
  });

  it('opens only after failureThreshold failed calls in a row; a success resets the count', () => {
    const { subject } = breaker();
    subject.failure('call');
    subject.failure('call');
    subject.success();
    subject.failure('call');
    subject.failure('call');
    assert.equal(subject.state, 'closed');
    subject.failure('call');
    assert.equal(subject.state, 'open');
  });

  it('is half-open after the cool-down; a failed trial opens it again, a success closes it', () => {
    const { subject, advance } = breaker();
    subject.failure('probe');
    advance(499);
    assert.equal(subject.state, 'open');
    advance(1);
    assert.equal(subject.state, 'half-open');
    subject.failure('call');
    assert.equal(subject.state, 'open', 'one failed trial call is enough');
    advance(500);
    subject.success();
    assert.equal(subject.state, 'closed');
  });

  it('counts how long it has been closed without interruption', () => {
    const { subject, advance } = breaker();
    assert.equal(subject.closedForMs(), Infinity, 'never down: it may take writes at once');
    subject.failure('probe');
    assert.equal(subject.closedForMs(), 0);
    advance(600);
    subject.success();
    advance(250);
    assert.equal(subject.closedForMs(), 250);
    subject.success();
    assert.equal(subject.closedForMs(), 250, 'a success while closed does not restart the clock');
  });
});
