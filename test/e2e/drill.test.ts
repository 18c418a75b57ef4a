// `kms-broker drill` and `recover` on what a real kube-apiserver wrote through kms-broker: Secrets
// stored over KMS v1 (KMSv1 gate) and then over KMS v2 (KDF seeds), an etcd snapshot of them,
// every value decrypted by the drill, and the recovered manifests applied back with kubectl.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import type { DrillReport } from '../../src/recovery/drill-report.ts';
import { drillArgs, recoverArgs } from '../helpers/recovery-cli.ts';
import { runCli } from '../helpers/cli-run.ts';
import { saveSnapshot } from '../helpers/etcd-snapshot.ts';
import { createSecret, secretValue } from '../helpers/kube-cluster.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { startBrokerCluster, type BrokerCluster } from '../helpers/kube-setup.ts';

describe('drill and recover on data kube-apiserver stored through kms-broker', () => {
  let setup: BrokerCluster | undefined;
  let dir: string;
  let snapshot: string;
  const values = new Map<string, string>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-drill-e2e-'));
    setup = await startBrokerCluster('drill');
    const { cluster, config } = setup;
    const v1 = kms('kms-broker-v1', config.path, 'v1');
    await cluster.startApiserver({ providers: [v1, identity], featureGates: 'KMSv1=true' });
    for (const name of ['v1-a', 'v1-b']) {
      values.set(name, randomBytes(12).toString('hex'));
      await createSecret(cluster, name, values.get(name) ?? '');
    }
    // KMS v2 writes from now on; the v1 values stay readable through the second provider.
    await cluster.startApiserver({
      providers: [kms('kms-broker', config.path), v1, identity],
      featureGates: 'KMSv1=true',
    });
    for (const name of ['v2-a', 'v2-b', 'v2-c']) {
      values.set(name, randomBytes(12).toString('hex'));
      await createSecret(cluster, name, values.get(name) ?? '');
    }
    snapshot = join(dir, 'snapshot.db');
    await saveSnapshot(cluster.etcd.url, snapshot);
  });

  after(async () => {
    await setup?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const on = () => {
    assert.ok(setup !== undefined, 'the cluster did not start');
    return setup;
  };

  it('decrypts every value the apiserver encrypted, KMS v1 and v2, with one unwrap per seed', async () => {
    const { config, env } = on();
    const run = await runCli([...drillArgs(config.path, snapshot), '--full', '--json'], {
      env,
      timeoutMs: 120_000,
    });
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as DrillReport;
    process.stdout.write(
      `# drill: ${report.totals.values} values, ${report.totals.ours} ours, ${report.backendCalls} backend calls, ${report.durationMs} ms\n`,
    );
    assert.equal(report.totals.byKind['kms-v1'], 2);
    assert.equal(report.totals.byKind['kms-v2'], 3);
    // KMS v1: a DEK per write; KMS v2: one seed for all three writes.
    assert.equal(report.totals.seeds, 3);
    assert.equal(report.backendCalls, 3);
    assert.deepEqual(report.decrypt, { mode: 'full', decrypted: 5, failed: { count: 0, keys: [] } });
    assert.deepEqual(
      report.sources.map(row => [row.name, row.recovers, row.onlyIt.count]),
      [['hsm', 5, 5]],
    );
  });

  it('recovers the Secrets as manifests that kubectl applies back', async () => {
    const { config, env, cluster } = on();
    const out = join(dir, 'out');
    const run = await runCli(
      [
        ...recoverArgs(snapshot, out),
        '--config',
        config.path,
        '--resource',
        'secrets',
        '--namespace',
        'default',
        '--json',
      ],
      { env, timeoutMs: 120_000 },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal((JSON.parse(run.stdout) as { files: number }).files, 5);
    for (const [name, value] of values) {
      const file = join(out, 'secrets', 'default', `${name}.yaml`);
      const manifest = parse(readFileSync(file, 'utf8')) as {
        kind: string;
        metadata: { name: string };
        data: { k: string };
      };
      assert.equal(manifest.kind, 'Secret');
      assert.equal(manifest.metadata.name, name);
      assert.equal(Buffer.from(manifest.data.k, 'base64').toString(), value);
      await cluster.kubectl(['delete', 'secret', name, '-n', 'default']);
      await cluster.kubectl(['apply', '-f', file]);
      assert.equal(await secretValue(cluster, 'default', name, 'k'), value);
    }
  });
});
