// The StorageVersionMigration runner against an in-memory migration API: it creates one
// migration per resource under a name that includes the key_id hash, follows its conditions,
// finds its own on a rerun, and replaces a failed one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KubeApi, KubeResponse } from '../../src/migrate/kube-client.ts';
import { keyIdHash } from '../../src/migrate/state.ts';
import { migrationName, runSvm, svmVersion } from '../../src/migrate/svm-runner.ts';

interface Migration {
  metadata: { name: string };
  spec: { resource: { group: string; resource: string } };
  status?: { conditions: { type: string; status: string; message?: string }[] };
}

const json = (status: number, body: unknown): KubeResponse => ({ status, body, text: JSON.stringify(body) });
const collection = '/apis/storagemigration.k8s.io/v1/storageversionmigrations';

/** A migration API whose controller moves a migration one step per GET: Running, then `end`. */
function fakeApi(end: 'Succeeded' | 'Failed') {
  const migrations = new Map<string, Migration>();
  const calls: string[] = [];
  const api: KubeApi = {
    server: 'https://fake:6443',
    request(method, path, body) {
      calls.push(`${method} ${path}`);
      if (path === '/apis/storagemigration.k8s.io')
        return Promise.resolve(json(200, { versions: [{ version: 'v1beta1' }, { version: 'v1' }] }));
      if (method === 'POST' && path === collection) {
        const created = body as Migration;
        if (migrations.has(created.metadata.name)) return Promise.resolve(json(409, {}));
        migrations.set(created.metadata.name, { ...created });
        return Promise.resolve(json(201, created));
      }
      const name = path.slice(collection.length + 1);
      const migration = migrations.get(name);
      if (migration === undefined) return Promise.resolve(json(404, {}));
      if (method === 'DELETE') {
        migrations.delete(name);
        return Promise.resolve(json(200, {}));
      }
      const answer = json(200, structuredClone(migration));
      const conditions = migration.status?.conditions ?? [];
      if (conditions.length === 0)
        migration.status = {
          conditions: [
            {
              type: 'Running',
              status: 'True',
              message: 'The migration is running, 50/200 objects not yet migrated',
            },
          ],
        };
      else if (!conditions.some(condition => condition.type === end))
        conditions.push({
          type: end,
          status: 'True',
          message: end === 'Failed' ? 'resource does not exist in GC' : 'done',
        });
      return Promise.resolve(answer);
    },
  };
  return { api, migrations, calls };
}

const secrets = { group: '', resource: 'secrets' };
const hash = keyIdHash('kbr1-test');
const hooks = (saved: unknown[] = []) => ({
  save: (progress: unknown) => saved.push(progress),
  timeoutMs: 60_000,
  pollMs: 1000,
  sleep: () => Promise.resolve(),
});

describe('runSvm', () => {
  it('prefers v1', async () => {
    assert.equal(await svmVersion(fakeApi('Succeeded').api), 'v1');
  });

  it('creates a migration for the resource and follows it to Succeeded', async () => {
    const fake = fakeApi('Succeeded');
    const progress: [number, number][] = [];
    const saved: unknown[] = [];
    const result = await runSvm(fake.api, 'v1', secrets, hash, {
      ...hooks(saved),
      progress: (done, total) => progress.push([done, total]),
    });
    const name = migrationName(secrets, hash);
    assert.deepEqual(result, { migration: name, alreadyDone: false, objects: 200 });
    assert.deepEqual(fake.migrations.get(name)?.spec, { resource: { group: '', resource: 'secrets' } });
    assert.deepEqual(progress, [
      [150, 200],
      [150, 200],
    ]);
    assert.deepEqual(saved.at(-1), { mode: 'svm', done: true, migration: name });
  });

  it('finds its own finished migration on a rerun and does nothing', async () => {
    const fake = fakeApi('Succeeded');
    await runSvm(fake.api, 'v1', secrets, hash, hooks());
    fake.calls.length = 0;
    const again = await runSvm(fake.api, 'v1', secrets, hash, hooks());
    assert.equal(again.alreadyDone, true);
    assert.deepEqual(fake.calls, [`GET ${collection}/${migrationName(secrets, hash)}`]);
  });

  it('reports a Failed migration as MIGRATION_FAILED with its message, and replaces it on the next run', async () => {
    const fake = fakeApi('Failed');
    await assert.rejects(
      runSvm(fake.api, 'v1', secrets, hash, hooks()),
      (error: Error & { code?: string }) =>
        error.code === 'MIGRATION_FAILED' && /resource does not exist in GC/.test(error.message),
    );
    fake.calls.length = 0;
    await assert.rejects(runSvm(fake.api, 'v1', secrets, hash, hooks()), /failed/);
    assert.ok(fake.calls.includes(`DELETE ${collection}/${migrationName(secrets, hash)}`));
    assert.ok(fake.calls.includes(`POST ${collection}`));
  });
});
