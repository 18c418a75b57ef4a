// The shared state store's etcd client against real etcd: a three-member cluster for the
// transactions, leases, reads and the watch, members killed under a live client and a live
// watch, every member down, and one etcd that serves only TLS with client certificates.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isBrokerError } from '../../src/errors.ts';
import { createStoreClient, type StoreClient, type WatchEvent } from '../../src/etcd/store-client.ts';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.ts';
import { etcdJson, type Etcd } from '../helpers/kube-etcd.ts';
import { startTlsEtcd } from '../helpers/etcd-tls.ts';
import { pollFor } from '../helpers/kube-process.ts';

const value = (text: string) => Buffer.from(text, 'utf8');
/** Generous: a busy 2-core machine may take seconds for what usually takes milliseconds. */
const within = (what: string, probe: () => boolean) =>
  pollFor(what, () => Promise.resolve(probe() ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });

/** Everything a watch reported, in order. */
function recorder() {
  const events: WatchEvent[] = [];
  const connected: boolean[] = [];
  let resyncs = 0;
  return {
    events,
    connected,
    get resyncs() {
      return resyncs;
    },
    handlers: {
      onEvents: (batch: readonly WatchEvent[]) => events.push(...batch),
      onResync: () => resyncs++,
      onConnected: (state: boolean) => connected.push(state),
    },
    keys: () => events.map(event => `${event.type} ${event.kv.key}`),
  };
}

describe('etcd store client on a three-member cluster', () => {
  let dir: string;
  let cluster: EtcdCluster;
  let client: StoreClient;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-etcd-store-'));
    cluster = await startEtcdCluster(dir, { members: 3 });
    client = createStoreClient({ endpoints: cluster.endpoints });
  });

  after(async () => {
    client?.close();
    await cluster?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('applies a transaction compared on mod_revision, and refuses it on a stale revision', async () => {
    const first = await client.put('/txn/a', value('one'));
    const done = await client.txn(
      [{ key: '/txn/a', modRevision: first }],
      [{ put: { key: '/txn/a', value: value('two') } }],
    );
    assert.equal(done.succeeded, true);
    assert.ok(BigInt(done.revision) > BigInt(first));
    const stale = await client.txn(
      [{ key: '/txn/a', modRevision: first }],
      [{ put: { key: '/txn/a', value: value('three') } }],
    );
    assert.equal(stale.succeeded, false);
    const { kvs } = await client.range('/txn/a', { prefix: false });
    assert.equal(kvs[0]?.value.toString(), 'two');
    assert.equal(kvs[0]?.modRevision, done.revision);
  });

  it("creates a key only when absent ('0'), several ops atomically", async () => {
    const created = await client.txn(
      [{ key: '/create/x', modRevision: '0' }],
      [
        { put: { key: '/create/x', value: value('mine') } },
        { put: { key: '/create/y', value: value('too') } },
      ],
    );
    assert.equal(created.succeeded, true);
    const again = await client.txn(
      [{ key: '/create/x', modRevision: '0' }],
      [{ delete: { key: '/create/', prefix: true } }],
    );
    assert.equal(again.succeeded, false, 'the key exists now');
    const { kvs } = await client.range('/create/', { prefix: true });
    assert.deepEqual(
      kvs.map(kv => [kv.key, kv.value.toString(), kv.createRevision]),
      [
        ['/create/x', 'mine', created.revision],
        ['/create/y', 'too', created.revision],
      ],
    );
  });

  it('reads a prefix (and only it) in key order, and a single key, with the revision', async () => {
    for (const key of ['/p/b', '/p/a', '/p/c/deeper', '/p-other', '/q']) await client.put(key, value(key));
    const read = await client.range('/p/', { prefix: true });
    assert.deepEqual(
      read.kvs.map(kv => kv.key),
      ['/p/a', '/p/b', '/p/c/deeper'],
    );
    assert.ok(BigInt(read.revision) >= BigInt(read.kvs[2]?.modRevision ?? '0'));
    const single = await client.range('/p/a', { prefix: false });
    assert.deepEqual(
      single.kvs.map(kv => kv.value.toString()),
      ['/p/a'],
    );
    await client.delete('/p/', { prefix: true });
    assert.deepEqual((await client.range('/p/', { prefix: true })).kvs, []);
    assert.equal(
      (await client.range('/q', { prefix: false })).kvs.length,
      1,
      'delete of a prefix stays in it',
    );
  });

  it('keeps a leased key while kept alive and drops it on revoke', async () => {
    const lease = await client.grantLease(60);
    assert.match(lease, /^[1-9][0-9]*$/);
    await client.put('/lease/me', value('here'), { lease });
    assert.equal((await client.range('/lease/me', { prefix: false })).kvs[0]?.lease, lease);
    const ttl = await client.keepAlive(lease);
    assert.ok(ttl > 0 && ttl <= 60, `ttl ${ttl}`);
    await client.revoke(lease);
    assert.deepEqual((await client.range('/lease/me', { prefix: false })).kvs, []);
    assert.equal(await client.keepAlive(lease), 0, 'a revoked lease reports TTL 0');
    await client.revoke(lease); // already gone: the effect asked for
    await assert.rejects(
      client.put('/lease/me', value('late'), { lease }),
      error => isBrokerError(error) && error.code === 'ETCD_LEASE_NOT_FOUND',
    );
  });

  it('drops a leased key once its TTL runs out without keep-alive', async () => {
    const lease = await client.grantLease(2);
    await client.put('/lease/short', value('soon gone'), { lease });
    await pollFor(
      'the leased key expires',
      async () =>
        (await client.range('/lease/short', { prefix: false })).kvs.length === 0 ? true : undefined,
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    assert.equal(await client.keepAlive(lease), 0);
  });

  it('watches puts and deletes under a prefix, in revision order, from the start revision', async () => {
    const start = await client.put('/watch/before', value('0'));
    const seen = recorder();
    const stop = client.watch('/watch/', start, seen.handlers);
    try {
      await client.put('/watch/a', value('1'));
      await client.put('/elsewhere', value('not watched'));
      await client.txn(
        [],
        [{ put: { key: '/watch/b', value: value('2') } }, { delete: { key: '/watch/a' } }],
      );
      await client.delete('/watch/', { prefix: true });
      await within('six events', () => seen.events.length >= 6);
      // One delete of a prefix: one revision, its events in key order.
      assert.deepEqual(seen.keys(), [
        'put /watch/before',
        'put /watch/a',
        'put /watch/b',
        'delete /watch/a',
        'delete /watch/b',
        'delete /watch/before',
      ]);
      const revisions = seen.events.map(event => BigInt(event.kv.modRevision));
      assert.deepEqual(
        revisions,
        [...revisions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      );
      assert.equal(seen.events[0]?.kv.modRevision, start, 'the start revision is inclusive');
      assert.deepEqual(seen.connected, [true]);
      assert.equal(seen.resyncs, 0);
    } finally {
      stop();
    }
  });
  it('asks the caller to re-read when the start revision is compacted, then goes on from the newest', async () => {
    const old = await client.put('/compacted/a', value('1'));
    const newest = await client.put('/compacted/a', value('2'));
    // KV.Compaction through etcd's JSON gateway: the client itself never compacts.
    await etcdJson(`${cluster.endpoints[0]}/v3/kv/compaction`, 'POST', { revision: newest, physical: true });
    const seen = recorder();
    const stop = client.watch('/compacted/', old, seen.handlers);
    try {
      await within('the re-read request', () => seen.resyncs === 1 && seen.connected.includes(true));
      await client.put('/compacted/b', value('after'));
      await within('the event after the restart', () => seen.events.length >= 1);
      assert.deepEqual(seen.keys(), ['put /compacted/b'], 'nothing from before the compaction is replayed');
    } finally {
      stop();
    }
  });
});

describe('etcd store client while members die', () => {
  let dir: string;
  let cluster: EtcdCluster;
  /** Writes through the members that stay up, so the client under test is the only one failing over. */
  let writer: StoreClient;
  const clients: StoreClient[] = [];
  const connect = (endpoints: readonly string[]) => {
    const client = createStoreClient({ endpoints, callTimeoutMs: 2000 });
    clients.push(client);
    return client;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-etcd-store-kill-'));
    cluster = await startEtcdCluster(dir, { members: 3 });
    writer = connect(cluster.endpoints.slice(1));
  });

  after(async () => {
    for (const client of clients) client.close();
    await cluster?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** After a kill the others may need an election: wait until they serve again. */
  const othersHealthy = async (killed: number) => {
    for (let index = 0; index < cluster.endpoints.length; index++)
      if (index !== killed) await cluster.member(index).healthy();
  };

  it('keeps a watch across the kill of the member it is connected to, losing no event', async () => {
    // The member to be killed is first in the list: the watch is on it, deterministically.
    const watched = connect(cluster.endpoints);
    const start = await writer.put('/kill/w/0', value('0'));
    const seen = recorder();
    const stop = watched.watch('/kill/w/', start, seen.handlers);
    try {
      await within('the first event', () => seen.events.length === 1);
      assert.deepEqual(seen.connected, [true]);
      await cluster.member(0).kill();
      await within('the watch to notice', () => seen.connected.length >= 2);
      await othersHealthy(0);
      for (const index of [1, 2, 3]) await writer.put(`/kill/w/${index}`, value(String(index)));
      await within('the events written after the kill', () => seen.events.length >= 4);
      assert.deepEqual(seen.keys(), ['put /kill/w/0', 'put /kill/w/1', 'put /kill/w/2', 'put /kill/w/3']);
      await within('the watch to reconnect', () => seen.connected.length >= 3);
      assert.deepEqual(seen.connected, [true, false, true]);
      assert.ok(seen.resyncs >= 1, 'the caller is asked to re-read after a reconnect');
    } finally {
      stop();
      await cluster.member(0).start();
    }
  });

  it('serves every call with one of three members killed, the dead one first in the list', async () => {
    const client = connect(cluster.endpoints);
    await client.put('/kill/u/warm', value('on member 0'));
    await cluster.member(0).kill();
    try {
      await othersHealthy(0);
      const revision = await client.put('/kill/u/a', value('1'));
      const txn = await client.txn(
        [{ key: '/kill/u/a', modRevision: revision }],
        [{ delete: { key: '/kill/u/a' } }],
      );
      assert.equal(txn.succeeded, true);
      const lease = await client.grantLease(30);
      await client.put('/kill/u/leased', value('x'), { lease });
      assert.ok((await client.keepAlive(lease)) > 0);
      assert.deepEqual(
        (await client.range('/kill/u/', { prefix: true })).kvs.map(kv => kv.key),
        ['/kill/u/leased', '/kill/u/warm'],
      );
      await client.revoke(lease);
      await client.delete('/kill/u/', { prefix: true });
    } finally {
      await cluster.member(0).start();
    }
  });

  it('fails with ETCD_UNREACHABLE naming every endpoint when all members are down, within the deadlines', async () => {
    const client = connect(cluster.endpoints);
    await client.put('/kill/last', value('before'));
    for (let index = 0; index < 3; index++) await cluster.member(index).kill();
    const started = Date.now();
    await assert.rejects(client.range('/kill/last', { prefix: false }), error => {
      assert.ok(isBrokerError(error), String(error));
      assert.equal(error.code, 'ETCD_UNREACHABLE');
      for (const url of cluster.endpoints) assert.ok(error.message.includes(url), error.message);
      assert.match(error.message, /etcd\.endpoints/);
      return true;
    });
    const watch = recorder();
    const stop = client.watch('/kill/', '0', watch.handlers);
    await within('the watch to report no connection', () => watch.connected.includes(false));
    stop();
    // Each member gets one 2 s deadline at most; refused connections fail at once.
    assert.ok(Date.now() - started < 3 * 2000 + 10_000, `took ${Date.now() - started} ms`);
  });
});

describe('etcd store client against an etcd that serves TLS', () => {
  let dir: string;
  let etcd: Etcd;
  let files: { caFile: string; certFile: string; keyFile: string; otherCa: string };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-etcd-store-tls-'));
    const started = await startTlsEtcd(dir, 'kms-broker');
    etcd = started.etcd;
    files = { ...started.client, otherCa: started.otherCa };
  });

  after(async () => {
    await etcd?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('writes, reads and watches with the client certificate; names the config key of a wrong file', async () => {
    const { caFile, certFile, keyFile } = files;
    const client = createStoreClient({ endpoints: [etcd.url], tls: { caFile, certFile, keyFile } });
    try {
      const seen = recorder();
      const stop = client.watch('/tls/', '0', seen.handlers);
      await within('the watch to be established', () => seen.connected.includes(true));
      const revision = await client.put('/tls/k', value('over TLS'));
      assert.equal((await client.range('/tls/', { prefix: true })).kvs[0]?.modRevision, revision);
      await within('the event', () => seen.events.length === 1);
      stop();
    } finally {
      client.close();
    }
    const wrongCa = createStoreClient({
      endpoints: [etcd.url],
      tls: { caFile: files.otherCa, certFile, keyFile },
    });
    try {
      await assert.rejects(
        wrongCa.range('/tls/', { prefix: true }),
        error =>
          isBrokerError(error) &&
          error.code === 'ETCD_AUTH_FAILED' &&
          /set etcd\.caFile to/.test(error.message),
      );
    } finally {
      wrongCa.close();
    }
    assert.throws(
      () =>
        createStoreClient({
          endpoints: [etcd.url],
          tls: { caFile, certFile, keyFile: join(dir, 'missing.key') },
        }),
      error =>
        isBrokerError(error) &&
        error.code === 'ETCD_TLS_FILE_UNREADABLE' &&
        /^etcd\.keyFile: cannot read .*missing\.key \(ENOENT\)/.test(error.message),
    );
  });
});
