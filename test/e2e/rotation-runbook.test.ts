// The rotation runbook of docs/operations.md, run as a new operator would on a real control
// plane: kube-apiserver 1.37 with Secrets and ConfigMaps encrypted through kms-broker, etcd,
// and kube-controller-manager running the storage-version-migrator. Each command is the CLI
// as documented; etcd is read directly as the second pair of eyes. The steps run in order on
// one cluster; each starts where the last ended.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { parse, stringify } from 'yaml';
import type { UsageScan } from '../../src/broker/usage-scan.ts';
import { adminClient, type AdminClient } from '../helpers/admin-http.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { decodeStored } from '../helpers/kube-etcd.ts';
import { startBrokerCluster, type BrokerCluster } from '../helpers/kube-setup.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';

const SECRETS = 300;
const CONFIGMAPS = 60;
/** Written before encryption was turned on: stored as plain (identity) values. */
const PLAIN_SECRETS = 5;
const LONG_MS = 600_000;

interface Judgement {
  backend: string;
  version: string;
  stage: string;
  neededBy?: { objects: number; resources: Record<string, number> };
}

describe('the rotation runbook on kube-apiserver 1.37 with etcd and kube-controller-manager', () => {
  let setup: BrokerCluster | undefined;
  let admin: AdminClient;
  /** The broker's config with an etcd section: what an operator's CLI reads on the node. */
  let cliConfig: string;
  const values = new Map<string, string>();

  before(async () => {
    // Apiservers re-seed before migrate starts (it waits for that), so a scan right after a
    // migration counts: the 90 s default guards scans run by hand, not this sequence.
    setup = await startBrokerCluster('e2e-runbook', { retirement: { scanAfterWriteMs: 0 } });
    admin = adminClient(setup.config.adminSocket);
    cliConfig = join(setup.config.dir, 'cli-config.yaml');
    const brokerConfig = parse(readFileSync(setup.config.path, 'utf8')) as Record<string, unknown>;
    writeFileSync(cliConfig, stringify({ ...brokerConfig, etcd: { endpoints: [setup.cluster.etcd.url] } }));

    await setup.cluster.startApiserver({});
    await createAll('plain', 'Secret', PLAIN_SECRETS);
    await setup.cluster.startApiserver({
      providers: [kms('kms-broker', setup.config.path), identity],
      resources: ['secrets', 'configmaps'],
    });
    await setup.cluster.startControllerManager();
    await createAll('s', 'Secret', SECRETS);
    await createAll('c', 'ConfigMap', CONFIGMAPS);
  });

  after(() => setup?.stop());

  const on = () => {
    assert.ok(setup !== undefined, 'the cluster did not start');
    return setup;
  };

  async function createAll(prefix: string, kind: 'Secret' | 'ConfigMap', count: number): Promise<void> {
    const items = Array.from({ length: count }, (_, i) => {
      const name = `${prefix}${String(i).padStart(3, '0')}`;
      const value = `${kind}-${name}-${i * 7919}`;
      values.set(`${kind}/${name}`, value);
      const data = kind === 'Secret' ? { stringData: { k: value } } : { data: { k: value } };
      return { apiVersion: 'v1', kind, metadata: { name, namespace: 'default' }, ...data };
    });
    await on().cluster.kubectl(
      ['create', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
    );
  }

  const cli = (...args: string[]): Promise<CliRun> => runCli(args, { timeoutMs: LONG_MS });
  const clusterFlags = () => [
    '--config',
    cliConfig,
    '--kubeconfig',
    on().cluster.kubeconfig,
    '--encryption-config',
    on().cluster.encryptionConfig,
    '--state-file',
    join(on().config.dir, 'migrate-state.json'),
  ];

  async function usage(): Promise<UsageScan> {
    const run = await cli('usage', '--config', cliConfig, '--rate', '1000000', '--json');
    assert.equal(run.code, 0, run.stderr);
    return JSON.parse(run.stdout) as UsageScan;
  }

  /** Objects per resource whose envelope carries a wrap of hsm's `version`. */
  function under(scan: UsageScan, version: string): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const set of scan.wrapSets)
      if (set.wraps.some(wrap => wrap.backend === 'hsm' && wrap.version === version))
        for (const [resource, count] of Object.entries(set.resources))
          counts[resource] = (counts[resource] ?? 0) + count;
    return counts;
  }

  /** How many objects of a resource the cluster holds, in every namespace (system ones too). */
  async function countOf(resource: 'secrets' | 'configmaps'): Promise<number> {
    const names = await on().cluster.kubectl(['get', resource, '-A', '-o', 'name']);
    return names.split('\n').filter(line => line.trim() !== '').length;
  }

  async function judgement(version: string): Promise<Judgement | undefined> {
    const response = await admin.get('/v1/usage', on().config.viewerToken);
    assert.equal(response.status, 200, response.text);
    return (response.body as { versions: Judgement[] }).versions.find(
      entry => entry.backend === 'hsm' && entry.version === version,
    );
  }

  /** Restarts the apiserver (etcd keeps everything) and reads every object back through it. */
  async function restartAndReadAll(): Promise<void> {
    await on().cluster.startApiserver({
      providers: [kms('kms-broker', on().config.path), identity],
      resources: ['secrets', 'configmaps'],
    });
    for (const [kind, field] of [
      ['secrets', 'stringData'],
      ['configmaps', 'data'],
    ] as const) {
      const list = JSON.parse(await on().cluster.kubectl(['get', kind, '-n', 'default', '-o', 'json'])) as {
        items: { kind?: string; metadata: { name: string }; data?: Record<string, string> }[];
      };
      const label = kind === 'secrets' ? 'Secret' : 'ConfigMap';
      const read = new Map(
        list.items.map(item => {
          const raw = item.data?.k ?? '';
          return [
            `${label}/${item.metadata.name}`,
            field === 'stringData' ? Buffer.from(raw, 'base64').toString() : raw,
          ];
        }),
      );
      for (const [key, value] of values)
        if (key.startsWith(`${label}/`)) assert.equal(read.get(key), value, `${key} reads back as written`);
    }
  }

  const step = orderedSteps();

  step('rotate; retire is refused while no scan exists', async () => {
    const rotated = await cli('rotate', 'hsm', '--config', cliConfig, '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal((JSON.parse(rotated.stdout) as { version: string }).version, '2');
    const refused = await cli('retire', 'hsm', '1', '--config', cliConfig);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /NO_USAGE_EVIDENCE: .*no usage scan is recorded\. Run `kms-broker usage`/);
  });

  step('usage shows every encrypted object under version 1, and the plain Secrets as identity', async () => {
    const scan = await usage();
    // The apiserver's own ConfigMap, written before encryption was on, is plain too.
    assert.deepEqual(under(scan, '1'), { secrets: SECRETS, configmaps: CONFIGMAPS });
    const configmaps = scan.resources.find(entry => entry.resource === 'configmaps');
    assert.equal(configmaps?.objects, await countOf('configmaps'));
    assert.equal(scan.formats.identity !== undefined && scan.formats.identity >= PLAIN_SECRETS, true);
    const secrets = scan.resources.find(entry => entry.resource === 'secrets');
    assert.deepEqual(secrets?.formats, { 'kms-v2': SECRETS, identity: PLAIN_SECRETS });
  });

  step('retire is refused while the scan shows objects under version 1, naming them', async () => {
    const refused = await cli('retire', 'hsm', '1', '--config', cliConfig);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      new RegExp(
        `VERSION_IN_USE: version 1 of backend hsm is still needed by \\d+ stored objects with no other readable wrap \\(secrets ${SECRETS}, configmaps \\d+\\).*kms-broker migrate`,
      ),
    );
    assert.equal((await judgement('1'))?.stage, 'needed');
  });

  step('migrate with StorageVersionMigrations; etcd then holds nothing under the old key_id', async () => {
    const run = await cli('migrate', ...clusterFlags(), '--json');
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as {
      keyId: string;
      resources: { resource: string; mode: string; durationMs: number; objects?: number }[];
    };
    assert.deepEqual(
      result.resources.map(entry => [entry.resource, entry.mode]),
      [
        ['secrets', 'svm'],
        ['configmaps', 'svm'],
      ],
    );
    for (const entry of result.resources) {
      const objects = await countOf(entry.resource as 'secrets' | 'configmaps');
      const perSecond = ((objects * 1000) / entry.durationMs).toFixed(1);
      console.log(
        `# migrate ${entry.resource} (StorageVersionMigration): ${objects} objects in ${entry.durationMs} ms = ${perSecond} objects/s`,
      );
    }
    for (const [name, raw] of await on().cluster.etcd.secrets()) {
      const stored = decodeStored(raw);
      assert.equal(stored.kind === 'kms-v2' ? stored.keyId : stored.kind, result.keyId, `${name} in etcd`);
    }
  });

  step('usage then shows nothing under version 1; retire succeeds', async () => {
    const scan = await usage();
    assert.deepEqual(under(scan, '1'), {});
    assert.deepEqual(under(scan, '2'), {
      secrets: await countOf('secrets'),
      configmaps: await countOf('configmaps'),
    });
    assert.equal((await judgement('1'))?.stage, 'retirable');
    const retired = await cli('retire', 'hsm', '1', '--config', cliConfig);
    assert.equal(retired.code, 0, retired.stderr);
    assert.equal(retired.stdout, 'hsm version 1 is retired\n');
  });

  step('the apiserver, restarted, reads every Secret and ConfigMap', async () => {
    await restartAndReadAll();
  });

  step('rotate --complete --yes does it all in one command and retires version 2', async () => {
    const started = Date.now();
    const run = await cli('rotate', 'hsm', '--complete', '--yes', ...clusterFlags(), '--json');
    const tookMs = Date.now() - started;
    assert.equal(run.code, 0, run.stderr);
    const outcome = JSON.parse(run.stdout) as {
      result: string;
      retired: string[];
      rotated: { version: string };
      took: Record<string, number>;
    };
    assert.equal(outcome.result, 'retired', run.stderr);
    assert.deepEqual(outcome.retired, ['2']);
    assert.equal(outcome.rotated.version, '3');
    assert.match(run.stderr, /^scan: version 2 of backend hsm protects 0 stored objects: nothing needs it$/m);
    console.log(`# rotate --complete: ${tookMs} ms in all; per step ${JSON.stringify(outcome.took)}`);
    const rotation = await admin.get('/v1/rotation', on().config.viewerToken);
    assert.equal((rotation.body as { stage: string }).stage, 'steady');
    assert.equal((await judgement('2'))?.stage, 'retired');
    const scan = await usage();
    assert.deepEqual(under(scan, '2'), {});
    assert.deepEqual(under(scan, '3'), {
      secrets: await countOf('secrets'),
      configmaps: await countOf('configmaps'),
    });
  });

  step('the apiserver, restarted again, reads everything with versions 1 and 2 retired', async () => {
    await restartAndReadAll();
  });
});
