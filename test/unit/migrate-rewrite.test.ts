// The rewrite runner against an in-memory apiserver: it pages through the list, PUTs each
// object as read, re-reads on a conflict, skips what was deleted, resumes after the last
// object done (also when the continue token expired) and keeps to its rate.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KubeApi, KubeResponse } from '../../src/migrate/kube-client.ts';
import type { ServedResource } from '../../src/migrate/resources.ts';
import { listKey, pacer, rewriteResource } from '../../src/migrate/rewrite-runner.ts';
import type { ResourceProgress } from '../../src/migrate/state.ts';

const secrets: ServedResource = {
  group: '',
  resource: 'secrets',
  version: 'v1',
  namespaced: true,
  listPath: '/api/v1/secrets',
};

interface Stored {
  namespace: string;
  name: string;
  rv: number;
}

/** Secrets in list (etcd key) order, with resourceVersions and scripted misbehaviour. */
function fakeApi(names: readonly string[]) {
  let revision = 100;
  const objects = new Map<string, Stored>(
    names.map(key => {
      const [namespace, name] = key.split('/') as [string, string];
      return [key, { namespace, name, rv: revision++ }];
    }),
  );
  const puts: string[] = [];
  const expired = new Set<string>();
  /** key → how many PUTs answer 409 (and bump the rv, as a concurrent writer would). */
  const conflicts = new Map<string, number>();
  /** keys deleted right after the list that returns them. */
  const deleteAfterList = new Set<string>();
  const sorted = () => [...objects.keys()].sort();
  const json = (status: number, body: unknown): KubeResponse => ({
    status,
    body,
    text: JSON.stringify(body),
  });
  const api: KubeApi = {
    server: 'https://fake:6443',
    request(method, path, body) {
      const url = new URL(path, 'https://fake');
      if (method === 'GET' && url.pathname === '/api/v1/secrets') {
        const limit = Number(url.searchParams.get('limit'));
        const token = url.searchParams.get('continue') ?? '';
        // A token expires once; a fresh list hands out tokens of a newer revision.
        if (expired.delete(token)) return Promise.resolve(json(410, { message: 'expired' }));
        const keys = sorted().filter(key => token === '' || key > token);
        const page = keys.slice(0, limit);
        const items = page.map(key => {
          const object = objects.get(key) as Stored;
          return {
            metadata: { namespace: object.namespace, name: object.name, resourceVersion: String(object.rv) },
          };
        });
        for (const key of page) if (deleteAfterList.has(key)) objects.delete(key);
        const more = keys.length > limit;
        return Promise.resolve(
          json(200, {
            kind: 'SecretList',
            metadata: {
              ...(more && { continue: page.at(-1) }),
              remainingItemCount: Math.max(0, keys.length - limit),
            },
            items,
          }),
        );
      }
      const match = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(url.pathname);
      assert.ok(match !== null, `unexpected ${method} ${path}`);
      const key = `${match[1]}/${match[2]}`;
      const object = objects.get(key);
      if (object === undefined) return Promise.resolve(json(404, { message: 'not found' }));
      if (method === 'GET')
        return Promise.resolve(
          json(200, {
            metadata: { namespace: object.namespace, name: object.name, resourceVersion: String(object.rv) },
          }),
        );
      assert.equal(method, 'PUT');
      const sent = body as { apiVersion: string; kind: string; metadata: { resourceVersion: string } };
      assert.equal(sent.apiVersion, 'v1');
      assert.equal(sent.kind, 'Secret');
      const pending = conflicts.get(key) ?? 0;
      if (pending > 0) {
        conflicts.set(key, pending - 1);
        object.rv = revision++;
      }
      if (sent.metadata.resourceVersion !== String(object.rv))
        return Promise.resolve(json(409, { message: 'the object has been modified' }));
      object.rv = revision++;
      puts.push(key);
      return Promise.resolve(json(200, {}));
    },
  };
  return { api, puts, expired, conflicts, deleteAfterList, objects };
}

const names = (count: number): string[] =>
  Array.from({ length: count }, (_, i) => `ns${i % 3}/s${String(i).padStart(3, '0')}`).sort();

const noWait = { sleep: () => Promise.resolve() };

describe('rewriteResource', () => {
  it('pages through the list and PUTs every object once, in list order', async () => {
    const fake = fakeApi(names(25));
    const saved: ResourceProgress[] = [];
    const result = await rewriteResource(
      fake.api,
      secrets,
      undefined,
      { rate: 0, pageSize: 10 },
      {
        save: progress => saved.push(progress),
        ...noWait,
      },
    );
    assert.deepEqual(fake.puts, names(25));
    assert.deepEqual(result, { rewritten: 25, resumedFrom: 0, gone: 0, conflicts: 0 });
    assert.deepEqual(saved.at(-1), {
      mode: 'rewrite',
      done: true,
      pageContinue: names(25)[19],
      lastDone: names(25)[24],
      rewritten: 25,
    });
  });

  it('re-reads an object after a conflict and writes the fresh one', async () => {
    const fake = fakeApi(names(5));
    const target = names(5)[2] as string;
    fake.conflicts.set(target, 2);
    const result = await rewriteResource(
      fake.api,
      secrets,
      undefined,
      { rate: 0, pageSize: 10 },
      {
        save: () => undefined,
        ...noWait,
      },
    );
    assert.equal(result.conflicts, 2);
    assert.equal(result.rewritten, 5);
    assert.equal(fake.puts.filter(key => key === target).length, 1);
  });

  it('gives up with MIGRATION_FAILED on an object that keeps changing', async () => {
    const fake = fakeApi(names(3));
    fake.conflicts.set(names(3)[1] as string, 100);
    await assert.rejects(
      rewriteResource(
        fake.api,
        secrets,
        undefined,
        { rate: 0, pageSize: 10, maxAttempts: 4 },
        { save: () => undefined, ...noWait },
      ),
      (error: Error & { code?: string }) =>
        error.code === 'MIGRATION_FAILED' && /after 4 attempts/.test(error.message),
    );
  });

  it('skips objects deleted between the list and the write', async () => {
    const fake = fakeApi(names(6));
    const gone = names(6)[3] as string;
    fake.deleteAfterList.add(gone);
    const result = await rewriteResource(
      fake.api,
      secrets,
      undefined,
      { rate: 0, pageSize: 10 },
      {
        save: () => undefined,
        ...noWait,
      },
    );
    assert.equal(result.gone, 1);
    assert.equal(result.rewritten, 5);
    assert.ok(!fake.puts.includes(gone));
  });

  it('resumes after the last object done, from the saved page, without writing earlier ones again', async () => {
    const all = names(30);
    const fake = fakeApi(all);
    const start: ResourceProgress = {
      mode: 'rewrite',
      done: false,
      pageContinue: all[9] as string,
      lastDone: all[14] as string,
      rewritten: 15,
    };
    const result = await rewriteResource(
      fake.api,
      secrets,
      start,
      { rate: 0, pageSize: 10 },
      { save: () => undefined, ...noWait },
    );
    assert.deepEqual(fake.puts, all.slice(15));
    assert.deepEqual(result, { rewritten: 15, resumedFrom: 15, gone: 0, conflicts: 0 });
  });

  it('lists from the start again when the saved continue token expired, still skipping what was done', async () => {
    const all = names(30);
    const fake = fakeApi(all);
    fake.expired.add(all[9] as string);
    const start: ResourceProgress = {
      mode: 'rewrite',
      done: false,
      pageContinue: all[9] as string,
      lastDone: all[14] as string,
      rewritten: 15,
    };
    await rewriteResource(
      fake.api,
      secrets,
      start,
      { rate: 0, pageSize: 10 },
      { save: () => undefined, ...noWait },
    );
    assert.deepEqual(fake.puts, all.slice(15));
  });

  it('saves after every object, so a kill loses at most the one in flight', async () => {
    const fake = fakeApi(names(4));
    const saved: (string | undefined)[] = [];
    await rewriteResource(
      fake.api,
      secrets,
      undefined,
      { rate: 0, pageSize: 2 },
      {
        save: progress => saved.push(progress.lastDone),
        ...noWait,
      },
    );
    for (const key of names(4)) assert.ok(saved.includes(key), key);
  });

  it('stops at an abort between objects', async () => {
    const fake = fakeApi(names(10));
    const controller = new AbortController();
    await assert.rejects(
      rewriteResource(
        fake.api,
        secrets,
        undefined,
        { rate: 0, pageSize: 5 },
        {
          save: progress => {
            if (progress.rewritten === 3) controller.abort(new Error('stop'));
          },
          signal: controller.signal,
          ...noWait,
        },
      ),
      /stop/,
    );
    assert.equal(fake.puts.length, 3);
  });

  it('keeps to its rate: the pacer waits 1/rate s between objects', async () => {
    let clock = 0;
    const waits: number[] = [];
    const pace = pacer(
      4,
      () => clock,
      ms => {
        waits.push(ms);
        clock += ms;
        return Promise.resolve();
      },
    );
    for (let i = 0; i < 5; i++) await pace();
    assert.deepEqual(waits, [250, 250, 250, 250]);
    assert.equal(clock, 1000);
  });

  it('orders objects as etcd keys do: namespace, then name', () => {
    assert.equal(listKey({ metadata: { namespace: 'a', name: 'b' } }), 'a/b');
    assert.equal(listKey({ metadata: { name: 'cluster-scoped' } }), 'cluster-scoped');
    // etcd compares bytes: '-' (0x2d) sorts before '/' (0x2f), so a-b/c lists before a/b.
    assert.ok(
      listKey({ metadata: { namespace: 'a-b', name: 'c' } }) <
        listKey({ metadata: { namespace: 'a', name: 'b' } }),
    );
  });
});
