// The scan's paging: every page at the first page's revision, keys resumed after the last one
// read, no faster than the rate, smaller pages when a page is too large to receive.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  PageTooLarge,
  type EtcdClient,
  type RangeRequest,
  type RangeResponse,
} from '../../src/usage/etcd-client.ts';
import { prefixEnd, readPrefix } from '../../src/usage/paged-read.ts';

/** An etcd of `count` keys under /registry/ at revision 42 that records what it was asked. */
function fakeEtcd(count: number, options: { maxPage?: number } = {}) {
  const keys = Array.from({ length: count }, (_, index) =>
    Buffer.from(`/registry/secrets/ns/k${String(index).padStart(5, '0')}`),
  );
  const requests: RangeRequest[] = [];
  const client: EtcdClient = {
    range(request): Promise<RangeResponse> {
      requests.push(request);
      if (options.maxPage !== undefined && request.limit > options.maxPage)
        return Promise.reject(new PageTooLarge());
      const inRange = keys.filter(
        key => Buffer.compare(key, request.key) >= 0 && Buffer.compare(key, request.rangeEnd) < 0,
      );
      const page = inRange.slice(0, request.limit);
      return Promise.resolve({
        revision: '42',
        count: inRange.length,
        more: inRange.length > page.length,
        kvs: page.map(key => ({ key, value: Buffer.from('v') })),
      });
    },
    close: () => undefined,
  };
  return { client, requests };
}

describe('usage scan: paged read', () => {
  it('reads every key once, in pages, all at the revision of the first page', async () => {
    const { client, requests } = fakeEtcd(1050);
    const seen: string[] = [];
    const result = await readPrefix(client, {
      prefix: Buffer.from('/registry/'),
      pageSize: 500,
      rate: 1_000_000,
      onPage: kvs => seen.push(...kvs.map(kv => kv.key.toString())),
    });
    assert.deepEqual(result, { revision: '42', read: 1050 });
    assert.equal(new Set(seen).size, 1050);
    assert.deepEqual(
      requests.map(request => [request.revision, request.limit]),
      [
        ['0', 500],
        ['42', 500],
        ['42', 500],
      ],
    );
    assert.equal(requests[1]?.key.toString(), '/registry/secrets/ns/k00499\0');
    assert.equal(requests[0]?.rangeEnd.toString(), '/registry0');
  });

  it('reports progress against the count of the first page', async () => {
    const { client } = fakeEtcd(30);
    const progress: string[] = [];
    await readPrefix(client, {
      prefix: Buffer.from('/registry/'),
      pageSize: 10,
      rate: 1_000_000,
      onPage: (_, p) => progress.push(`${p.read}/${p.total}@${p.revision}`),
    });
    assert.deepEqual(progress, ['10/30@42', '20/30@42', '30/30@42']);
  });

  it('keeps to the rate: waits before a page until the values read fit in the time spent', async () => {
    const { client, requests } = fakeEtcd(25);
    let clock = 0;
    const waits: number[] = [];
    await readPrefix(client, {
      prefix: Buffer.from('/registry/'),
      pageSize: 100,
      rate: 10,
      onPage: () => undefined,
      now: () => clock,
      wait: ms => {
        waits.push(ms);
        clock += ms;
        return Promise.resolve();
      },
    });
    // Pages hold a second's worth at most (10), and each waits for the one before.
    assert.deepEqual(
      requests.map(request => request.limit),
      [10, 10, 10],
    );
    assert.deepEqual(waits, [1000, 1000]);
  });

  it('asks for fewer keys when a page is too large to receive, down to one', async () => {
    const { client, requests } = fakeEtcd(5, { maxPage: 2 });
    const result = await readPrefix(client, {
      prefix: Buffer.from('/registry/'),
      pageSize: 8,
      rate: 1_000_000,
      onPage: () => undefined,
    });
    assert.equal(result.read, 5);
    assert.deepEqual(
      requests.map(request => request.limit),
      [8, 4, 2, 2, 2],
    );
    const { client: hopeless } = fakeEtcd(5, { maxPage: 0 });
    await assert.rejects(
      readPrefix(hopeless, { prefix: Buffer.from('/r/'), pageSize: 4, rate: 100, onPage: () => undefined }),
      { code: 'ETCD_READ_FAILED' },
    );
  });

  it('ends the range at the prefix with its last byte incremented', () => {
    assert.equal(prefixEnd(Buffer.from('/registry/')).toString(), '/registry0');
    assert.deepEqual(prefixEnd(Buffer.from([0x61, 0xff])), Buffer.from([0x62]));
    assert.deepEqual(prefixEnd(Buffer.from([0xff])), Buffer.from([0]));
  });
});
