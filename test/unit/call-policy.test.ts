// The one call policy every remote backend uses: attempts, retries by kind, the bound on
// concurrent requests, deadlines, and the mapping of failures into the error catalog.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BackendCallError, brokerErrorFor, createCallPolicy } from '../../src/backends/call-policy.ts';
import { startDeadline, partOfDeadline } from '../../src/deadline.ts';
import { BrokerError } from '../../src/errors.ts';

const passThrough = (error: unknown) =>
  error instanceof BackendCallError ? error : new BackendCallError('other', 'TEST');

function policy(maxConcurrency = 4) {
  return createCallPolicy({ maxConcurrency, requestTimeoutMs: 1000, classify: passThrough });
}

describe('call policy', () => {
  it('tries an outage or a throttled request three times in all, then gives up with it', async () => {
    for (const kind of ['unavailable', 'throttled'] as const) {
      let attempts = 0;
      const deadline = startDeadline(5000);
      await assert.rejects(
        policy().run(deadline, () => {
          attempts++;
          return Promise.reject(new BackendCallError(kind, 'HTTP_503'));
        }),
        (error: unknown) => error instanceof BackendCallError && error.kind === kind,
      );
      deadline.dispose();
      assert.equal(attempts, 3, kind);
    }
  });

  it('never retries what a retry cannot mend', async () => {
    for (const kind of [
      'permission',
      'auth',
      'invalid-ciphertext',
      'rejected',
      'not-found',
      'other',
    ] as const) {
      let attempts = 0;
      const deadline = startDeadline(5000);
      await assert.rejects(
        policy().run(deadline, () => {
          attempts++;
          return Promise.reject(new BackendCallError(kind, 'X'));
        }),
      );
      deadline.dispose();
      assert.equal(attempts, 1, kind);
    }
  });

  it('recovers when a retry succeeds', async () => {
    let attempts = 0;
    const deadline = startDeadline(5000);
    const result = await policy().run(deadline, () =>
      ++attempts < 2 ? Promise.reject(new BackendCallError('throttled', 'HTTP_429')) : Promise.resolve('ok'),
    );
    deadline.dispose();
    assert.equal(result, 'ok');
    assert.equal(attempts, 2);
  });

  it('gives each attempt whole milliseconds, even on a fractional share of a deadline', async () => {
    const deadline = startDeadline(5000);
    // A share like 2499/2 = 1249.5 ms once made AbortSignal.timeout throw a RangeError.
    const part = partOfDeadline(deadline, 1249.5);
    const seen: number[] = [];
    await policy().run(part, (_signal, timeoutMs) => {
      seen.push(timeoutMs);
      return Promise.resolve();
    });
    part.dispose();
    deadline.dispose();
    assert.equal(seen.length, 1);
    assert.ok(Number.isInteger(seen[0]), `timeout ${seen[0]}`);
    assert.ok((seen[0] ?? 0) <= 1000, 'capped by the request timeout');
  });

  it('answers DEADLINE_EXCEEDED when the call deadline passes during a hanging attempt', async () => {
    const deadline = startDeadline(50);
    await assert.rejects(
      policy().run(
        deadline,
        attemptSignal =>
          new Promise((_resolve, reject) => {
            attemptSignal.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
          }),
      ),
      (error: unknown) => error instanceof BrokerError && error.code === 'DEADLINE_EXCEEDED',
    );
    deadline.dispose();
  });

  it('keeps at most maxConcurrency attempts in flight', async () => {
    const bounded = policy(2);
    let inFlight = 0;
    let most = 0;
    const releases: (() => void)[] = [];
    const deadline = startDeadline(5000);
    const calls = Array.from({ length: 6 }, () =>
      bounded.run(deadline, () => {
        inFlight++;
        most = Math.max(most, inFlight);
        return new Promise<void>(resolve =>
          releases.push(() => {
            inFlight--;
            resolve();
          }),
        );
      }),
    );
    // Release the calls one by one as they start; bounded in count.
    for (let released = 0; released < 6; released++) {
      for (let turns = 0; releases.length === 0 && turns < 100; turns++) await new Promise(setImmediate);
      releases.shift()?.();
    }
    await Promise.all(calls);
    deadline.dispose();
    assert.equal(most, 2);
  });

  it('maps each failure kind to the catalog, naming the permission that was refused', () => {
    const context = { backend: 'aws', service: 'AWS KMS', permission: 'kms:Decrypt on arn:aws:kms:k' };
    const codes = Object.fromEntries(
      (
        [
          'unavailable',
          'throttled',
          'permission',
          'auth',
          'invalid-ciphertext',
          'not-found',
          'rejected',
          'other',
        ] as const
      ).map(kind => [kind, brokerErrorFor(new BackendCallError(kind, 'CAUSE'), context).code]),
    );
    assert.deepEqual(codes, {
      unavailable: 'BACKEND_UNAVAILABLE',
      throttled: 'BACKEND_UNAVAILABLE',
      permission: 'BACKEND_PERMISSION_DENIED',
      auth: 'BACKEND_AUTH_FAILED',
      'invalid-ciphertext': 'INVALID_CIPHERTEXT',
      'not-found': 'KEY_MISSING',
      rejected: 'BACKEND_REJECTED',
      other: 'BACKEND_UNAVAILABLE',
    });
    const denied = brokerErrorFor(new BackendCallError('permission', 'AccessDeniedException'), context);
    assert.match(denied.message, /kms:Decrypt on arn:aws:kms:k/);
  });
});
