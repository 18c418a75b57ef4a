// The migration state file, the re-seed check, the resource lists and the SVM runner's pure
// parts: where a run got to survives a restart, per cluster and key_id; a foreign file is
// refused rather than overwritten; an apiserver counts as re-seeded only when its latest
// Status returned the broker's key_id.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { KubeApi, KubeResponse } from '../../src/migrate/kube-client.ts';
import { pickedUp, statusSeries, waitForReseed } from '../../src/migrate/reseed-wait.ts';
import {
  MigrateInputError,
  parseResourceList,
  resourcesFromEncryptionConfig,
} from '../../src/migrate/resources.ts';
import { defaultStatePath, keyIdHash, openState } from '../../src/migrate/state.ts';
import { migrationName, parseRunningMessage } from '../../src/migrate/svm-runner.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmsb-migrate-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('migration state file', () => {
  it('keeps progress per cluster and key_id across reopenings', () => {
    const path = join(dir, 'a', 'state.json');
    const first = openState(path, 'https://a:6443', 'kbr1-one');
    assert.equal(first.get(), undefined);
    first.update('secrets', {
      mode: 'rewrite',
      done: false,
      pageContinue: 'tok',
      lastDone: 'ns/x',
      rewritten: 7,
    });
    openState(path, 'https://b:6443', 'kbr1-one').update('secrets', {
      mode: 'svm',
      done: true,
      migration: 'm',
    });

    const again = openState(path, 'https://a:6443', 'kbr1-one');
    assert.deepEqual(again.get()?.resources.secrets, {
      mode: 'rewrite',
      done: false,
      pageContinue: 'tok',
      lastDone: 'ns/x',
      rewritten: 7,
    });
    assert.equal(openState(path, 'https://a:6443', 'kbr1-two').get(), undefined);
    again.finish();
    assert.match(openState(path, 'https://a:6443', 'kbr1-one').get()?.finishedAt ?? '', /^\d{4}-/);
    const file = JSON.parse(readFileSync(path, 'utf8')) as { migrations: Record<string, unknown> };
    assert.deepEqual(Object.keys(file.migrations).sort(), [
      `https://a:6443 ${keyIdHash('kbr1-one')}`,
      `https://b:6443 ${keyIdHash('kbr1-one')}`,
    ]);
  });

  it('refuses a file it did not write, naming it and the way out', () => {
    const path = join(dir, 'foreign.json');
    writeFileSync(path, '{"something": "else"}');
    assert.throws(
      () => openState(path, 'https://a:6443', 'k'),
      (error: Error & { code?: string }) =>
        error.code === 'MIGRATION_STATE_CORRUPT' &&
        error.message.includes(path) &&
        /move it away/.test(error.message),
    );
    assert.equal(readFileSync(path, 'utf8'), '{"something": "else"}');
  });

  it('lives under the user cache dir by default', () => {
    assert.equal(defaultStatePath({ XDG_CACHE_HOME: '/c' }), '/c/kms-broker/migrate-state.json');
  });

  it('hashes key_ids as the apiserver metrics do: sha256:<hex>', () => {
    assert.equal(keyIdHash('abc'), `sha256:${createHash('sha256').update('abc').digest('hex')}`);
  });
});

const metric = 'apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds';
const line = (hash: string, seconds: number, provider = 'kms-broker') =>
  `${metric}{apiserver_id_hash="sha256:aa",key_id_hash="${hash}",provider_name="${provider}"} ${seconds}`;

describe('re-seed check', () => {
  const oldHash = keyIdHash('old');
  const newHash = keyIdHash('new');

  it('reads the Status series from /metrics text', () => {
    const text = `# HELP ${metric} x\n# TYPE ${metric} gauge\n${line(oldHash, 1.7e9)}\nother_metric 1\n`;
    assert.deepEqual(statusSeries(text), [{ provider: 'kms-broker', keyIdHash: oldHash, seconds: 1.7e9 }]);
  });

  it('counts an apiserver as picked up only when its latest Status returned the key_id', () => {
    assert.equal(pickedUp(statusSeries(line(oldHash, 100)), newHash), false);
    assert.equal(pickedUp(statusSeries(`${line(oldHash, 200)}\n${line(newHash, 100)}`), newHash), false);
    assert.equal(pickedUp(statusSeries(`${line(oldHash, 100)}\n${line(newHash, 200)}`), newHash), true);
    // Another provider (an old plugin listed second) does not hide ours.
    assert.equal(
      pickedUp(statusSeries(`${line(newHash, 100)}\n${line(oldHash, 300, 'old-plugin')}`), newHash),
      true,
    );
  });

  function apiserver(metrics: () => string): KubeApi {
    const respond = (status: number, text: string): KubeResponse => ({ status, body: undefined, text });
    return {
      server: 'https://a:6443',
      request: (_method, path) =>
        Promise.resolve(path === '/metrics' ? respond(200, metrics()) : respond(200, 'ok')),
    };
  }

  it('waits until the apiserver reports the key_id, polling within its bounds', async () => {
    let polls = 0;
    let clock = 0;
    const api = apiserver(() =>
      ++polls >= 3 ? `${line(oldHash, 1)}\n${line(newHash, 2)}` : line(oldHash, 1),
    );
    const ready: string[] = [];
    await waitForReseed(api, ['https://a:6443'], 'new', newHash, {
      timeoutMs: 60_000,
      pollMs: 1000,
      now: () => clock,
      sleep: ms => {
        clock += ms;
        return Promise.resolve();
      },
      onReady: server => ready.push(server),
    });
    assert.equal(polls, 3);
    assert.deepEqual(ready, ['https://a:6443']);
  });

  it('times out with RESEED_TIMEOUT naming the apiserver, the key_id and what it sees', async () => {
    let clock = 0;
    await assert.rejects(
      waitForReseed(
        apiserver(() => line(oldHash, 1)),
        ['https://a:6443'],
        'new',
        newHash,
        {
          timeoutMs: 10_000,
          pollMs: 2000,
          now: () => clock,
          sleep: ms => {
            clock += ms;
            return Promise.resolve();
          },
        },
      ),
      (error: Error & { code?: string }) =>
        error.code === 'RESEED_TIMEOUT' &&
        error.message.includes('https://a:6443') &&
        error.message.includes('key_id new') &&
        error.message.includes(oldHash) &&
        /run migrate again/.test(error.message),
    );
  });
});

describe('resources to migrate', () => {
  it('parses --resources as in an EncryptionConfiguration', () => {
    assert.deepEqual(parseResourceList('secrets, configmaps,deployments.apps,secrets'), [
      { group: '', resource: 'secrets' },
      { group: '', resource: 'configmaps' },
      { group: 'apps', resource: 'deployments' },
    ]);
    assert.throws(() => parseResourceList('*.*'), MigrateInputError);
    assert.throws(() => parseResourceList('Secrets'), /--resources: 'Secrets' is not a resource name/);
  });

  it('takes from an EncryptionConfiguration the resources a kms provider writes', () => {
    const path = join(dir, 'encryption.yaml');
    writeFileSync(
      path,
      [
        'apiVersion: apiserver.config.k8s.io/v1',
        'kind: EncryptionConfiguration',
        'resources:',
        '  - resources: [secrets, configmaps]',
        '    providers: [{kms: {apiVersion: v2, name: kms-broker, endpoint: "unix:///x"}}, {identity: {}}]',
        '  - resources: [events]',
        '    providers: [{identity: {}}, {kms: {apiVersion: v2, name: kms-broker, endpoint: "unix:///x"}}]',
      ].join('\n'),
    );
    assert.deepEqual(resourcesFromEncryptionConfig(path), [
      { group: '', resource: 'secrets' },
      { group: '', resource: 'configmaps' },
    ]);
    assert.throws(
      () => resourcesFromEncryptionConfig(join(dir, 'missing.yaml')),
      /cannot read it \(ENOENT\)/,
    );
  });
});

describe('StorageVersionMigration naming and progress', () => {
  it('names a migration after the resource and the key_id hash, stably', () => {
    const hash = keyIdHash('kbr1-x');
    const name = migrationName({ group: 'apps', resource: 'deployments' }, hash);
    assert.equal(name, `kms-broker-deployments.apps-${hash.slice(7, 23)}`);
    assert.match(name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    assert.notEqual(
      migrationName({ group: '', resource: 'secrets' }, keyIdHash('kbr1-y')),
      migrationName({ group: '', resource: 'secrets' }, hash),
    );
  });

  it("reads the controller's Running message", () => {
    assert.deepEqual(parseRunningMessage('The migration is running, 3/200 objects not yet migrated'), {
      done: 197,
      total: 200,
    });
    assert.deepEqual(parseRunningMessage('The migration is running, 200 objects verified migrated'), {
      done: 200,
      total: 200,
    });
    assert.equal(parseRunningMessage('The migration is running'), undefined);
  });
});
