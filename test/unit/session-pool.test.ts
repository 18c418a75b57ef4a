// The HSM session pool: a hard cap on sessions, a bounded FIFO queue of waiters that give
// up on their deadline, replacement of broken sessions, and a clean close.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SessionPool } from '../../src/backends/pkcs11/session-pool.ts';
import { brokerError } from './expect-error.ts';

/**
 * A pool of numbered items that records what it created and destroyed; while `token.gone`
 * is set, creating an item fails as opening a session on a lost token does.
 */
function pool(size: number, maxWaiters = 16) {
  const created: number[] = [];
  const destroyed: number[] = [];
  const token = { gone: false };
  const instance = new SessionPool<number>(
    {
      create: () => {
        if (token.gone) throw new Error('CKR_TOKEN_NOT_PRESENT');
        const item = created.length + 1;
        created.push(item);
        return item;
      },
      destroy: item => destroyed.push(item),
    },
    size,
    maxWaiters,
  );
  return { pool: instance, created, destroyed, token };
}

const never = new AbortController().signal;
/** A pool bug must fail a test, not leave an acquire pending forever. */
const bounded = { timeout: 5000 };

describe('SessionPool', () => {
  it('creates at most `size` items and queues the callers beyond', bounded, async () => {
    const { pool: p, created } = pool(3);
    const items = await Promise.all([p.acquire(never), p.acquire(never), p.acquire(never)]);
    assert.deepEqual(items.sort(), [1, 2, 3]);
    const waiting = p.acquire(never);
    assert.deepEqual(created, [1, 2, 3]);
    assert.equal(p.leased, 3);
    p.release(2);
    assert.equal(await waiting, 2);
    assert.deepEqual(created, [1, 2, 3]);
    assert.equal(p.leased, 3);
  });

  it('reuses a released item instead of creating one', bounded, async () => {
    const { pool: p, created } = pool(2);
    const first = await p.acquire(never);
    p.release(first);
    assert.equal(p.leased, 0);
    assert.equal(await p.acquire(never), first);
    assert.deepEqual(created, [1]);
  });

  it('serves waiters first in, first out', bounded, async () => {
    const { pool: p } = pool(1);
    const item = await p.acquire(never);
    const order: number[] = [];
    // Each waiter hands the item on as soon as it gets it, so one release serves all.
    const waiters = [0, 1, 2, 3].map(index =>
      p.acquire(never).then(got => {
        order.push(index);
        p.release(got);
      }),
    );
    p.release(item);
    await Promise.all(waiters);
    assert.deepEqual(order, [0, 1, 2, 3]);
    assert.equal(p.leased, 0);
  });

  it(
    'rejects a waiter whose signal aborts with DEADLINE_EXCEEDED and removes it from the queue',
    bounded,
    async () => {
      const { pool: p } = pool(1, 2);
      const item = await p.acquire(never);
      const controller = new AbortController();
      const gaveUp = p.acquire(controller.signal);
      const patient = p.acquire(never);
      controller.abort();
      await assert.rejects(gaveUp, brokerError('DEADLINE_EXCEEDED'));
      // Its queue place is free again (maxWaiters 2), and the release goes to the next waiter.
      const third = p.acquire(never);
      p.release(item);
      assert.equal(await patient, item);
      p.release(item);
      assert.equal(await third, item);
      assert.equal(p.leased, 1);
    },
  );

  it('rejects at once with DEADLINE_EXCEEDED when the signal has already aborted', bounded, async () => {
    const { pool: p, created } = pool(1);
    await assert.rejects(p.acquire(AbortSignal.abort()), brokerError('DEADLINE_EXCEEDED'));
    assert.deepEqual(created, []);
  });

  it('rejects callers beyond maxWaiters with BACKEND_UNAVAILABLE (QUEUE_FULL)', bounded, async () => {
    const { pool: p } = pool(1, 2);
    const item = await p.acquire(never);
    const queued = [p.acquire(never), p.acquire(never)];
    await assert.rejects(p.acquire(never), (error: unknown) => {
      brokerError('BACKEND_UNAVAILABLE', 'too many calls are waiting')(error);
      assert.equal((error as { causeName?: string }).causeName, 'QUEUE_FULL');
      return true;
    });
    p.release(item);
    assert.equal(await queued[0], item);
    p.release(item);
    assert.equal(await queued[1], item);
  });

  it('destroys an item released as broken and gives the next waiter a fresh one', bounded, async () => {
    const { pool: p, created, destroyed } = pool(1);
    const broken = await p.acquire(never);
    const waiting = p.acquire(never);
    p.release(broken, true);
    assert.deepEqual(destroyed, [broken]);
    const fresh = await waiting;
    assert.notEqual(fresh, broken);
    assert.deepEqual(created, [broken, fresh]);
    assert.equal(p.leased, 1);
  });

  it('frees the slot of a broken item when nobody waits', bounded, async () => {
    const { pool: p, created, destroyed } = pool(1);
    p.release(await p.acquire(never), true);
    assert.equal(p.leased, 0);
    assert.equal(await p.acquire(never), 2);
    assert.deepEqual([created, destroyed], [[1, 2], [1]]);
  });

  it(
    'turns a failing create into a rejection (not a synchronous throw) and keeps the slot free',
    bounded,
    async () => {
      const { pool: p, token } = pool(1);
      token.gone = true;
      let acquired: Promise<number> | undefined;
      assert.doesNotThrow(() => (acquired = p.acquire(never)));
      await assert.rejects(acquired as Promise<number>, { message: 'CKR_TOKEN_NOT_PRESENT' });
      assert.equal(p.leased, 0);
      token.gone = false;
      assert.equal(await p.acquire(never), 1);
    },
  );

  it('rejects the waiter when creating its replacement item fails', bounded, async () => {
    const { pool: p, token } = pool(1);
    const item = await p.acquire(never);
    const waiting = p.acquire(never);
    token.gone = true;
    p.release(item, true);
    await assert.rejects(waiting, { message: 'CKR_TOKEN_NOT_PRESENT' });
    assert.equal(p.leased, 0);
  });

  it('close() destroys idle items at once and leased ones when they come back', bounded, async () => {
    const { pool: p, destroyed } = pool(2);
    const leased = await p.acquire(never);
    const idle = await p.acquire(never);
    p.release(idle);
    p.close();
    assert.deepEqual(destroyed, [idle]);
    p.release(leased);
    assert.deepEqual(destroyed, [idle, leased]);
    assert.equal(p.leased, 0);
  });

  it('close() rejects every queued waiter with BACKEND_UNAVAILABLE', bounded, async () => {
    const { pool: p } = pool(1);
    await p.acquire(never);
    const waiters = [p.acquire(never), p.acquire(never)];
    p.close();
    for (const waiter of waiters)
      await assert.rejects(waiter, brokerError('BACKEND_UNAVAILABLE', 'pool is closed'));
  });

  it('rejects acquire after close() with BACKEND_UNAVAILABLE and creates nothing', bounded, async () => {
    const { pool: p, created } = pool(2);
    p.close();
    await assert.rejects(p.acquire(never), brokerError('BACKEND_UNAVAILABLE', 'pool is closed'));
    assert.deepEqual(created, []);
  });
  it(
    'resize() to a smaller size closes idle items, and leased ones above it as they come back',
    bounded,
    async () => {
      const { pool: p, destroyed } = pool(4);
      const items = await Promise.all([
        p.acquire(never),
        p.acquire(never),
        p.acquire(never),
        p.acquire(never),
      ]);
      p.release(items[0]);
      p.release(items[1]);
      p.resize(2); // two leased, two idle: the idle ones go
      assert.deepEqual(destroyed.sort(), [1, 2]);
      p.release(items[2]); // still at the size: kept
      assert.deepEqual(destroyed.sort(), [1, 2]);
      p.resize(1); // one leased, one idle: the idle one goes
      assert.deepEqual(destroyed.sort(), [1, 2, 3]);
      p.release(items[3]); // the pool is down to its size: kept
      assert.deepEqual(destroyed.sort(), [1, 2, 3]);
      assert.equal(p.size, 1);
    },
  );

  it('resize() below the leased count closes leased items as they come back', bounded, async () => {
    const { pool: p, destroyed } = pool(2);
    const [first, second] = await Promise.all([p.acquire(never), p.acquire(never)]);
    p.resize(1);
    assert.deepEqual(destroyed, []);
    p.release(first);
    assert.deepEqual(destroyed, [first]);
    p.release(second);
    assert.deepEqual(destroyed, [first]);
  });

  it('resize() to a larger size serves the waiters at once', bounded, async () => {
    const { pool: p, created } = pool(1);
    await p.acquire(never);
    const waiting = [p.acquire(never), p.acquire(never)];
    p.resize(3);
    assert.deepEqual((await Promise.all(waiting)).sort(), [2, 3]);
    assert.equal(created.length, 3);
  });

  it('touchIdle() closes the idle items the touch throws on, and keeps the others', bounded, async () => {
    const { pool: p, destroyed } = pool(3);
    const items = await Promise.all([p.acquire(never), p.acquire(never), p.acquire(never)]);
    for (const item of items) p.release(item);
    const touched: number[] = [];
    p.touchIdle(item => {
      touched.push(item);
      if (item === 2) throw new Error('CKR_SESSION_HANDLE_INVALID');
    });
    assert.deepEqual(touched.sort(), [1, 2, 3]);
    assert.deepEqual(destroyed, [2]);
    // The two left are reused before anything new is created.
    assert.deepEqual([await p.acquire(never), await p.acquire(never)].sort(), [1, 3]);
  });
});
