// `kms-broker migrate` on a real cluster: kube-apiserver 1.37 encrypting Secrets through the
// broker, kube-controller-manager running the storage-version-migrator, and a couple of hundred
// Secrets. After each rotation the command waits for the apiserver to re-seed, re-encrypts,
// and etcd (read directly) shows every Secret under the new key_id. The steps run in order on
// one cluster; each starts where the last ended.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { adminClient, type AdminClient } from '../helpers/admin-http.ts';
import { CLI } from '../helpers/broker-process.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { decodeStored } from '../helpers/kube-etcd.ts';
import { pollFor } from '../helpers/kube-process.ts';
import { startBrokerCluster, type BrokerCluster } from '../helpers/kube-setup.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';

const SECRETS = 200;
const CLI_TIMEOUT_MS = 300_000;

interface ResourceResult {
  resource: string;
  mode: 'svm' | 'rewrite';
  status: 'migrated' | 'already-done';
  durationMs: number;
  rewritten?: number;
  resumedFrom?: number;
  migration?: string;
}
interface MigrationResult {
  keyId: string;
  alreadyDone: boolean;
  resources: ResourceResult[];
}

describe('kms-broker migrate on kube-apiserver 1.37 with kube-controller-manager', () => {
  let setup: BrokerCluster | undefined;
  let admin: AdminClient;
  const work = mkdtempSync(join(tmpdir(), 'kmsb-migrate-e2e-'));
  const stateFile = join(work, 'migrate-state.json');

  before(async () => {
    setup = await startBrokerCluster('e2e-migrate-cmd');
    admin = adminClient(setup.config.adminSocket);
    await setup.cluster.startApiserver({ providers: [kms('kms-broker', setup.config.path), identity] });
    await setup.cluster.startControllerManager();
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: Array.from({ length: SECRETS }, (_, i) => ({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: `s${String(i).padStart(3, '0')}`, namespace: 'default' },
        stringData: { k: `value-${i}` },
      })),
    };
    await setup.cluster.kubectl(['create', '-f', '-'], JSON.stringify(list));
  });

  after(async () => {
    await setup?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const on = () => {
    assert.ok(setup !== undefined, 'the cluster did not start');
    return setup;
  };

  const args = (...extra: string[]) => [
    'migrate',
    '--config',
    on().config.path,
    '--kubeconfig',
    on().cluster.kubeconfig,
    '--state-file',
    stateFile,
    '--json',
    ...extra,
  ];

  /** Runs the CLI to its end; resolves with exit code, stdout and stderr. */
  function migrate(...extra: string[]): Promise<CliRun> {
    return runCli(args(...extra), { timeoutMs: CLI_TIMEOUT_MS });
  }

  async function migrated(...extra: string[]): Promise<MigrationResult> {
    const run = await migrate(...extra);
    assert.equal(run.code, 0, `migrate exited ${run.code}: ${run.stderr}`);
    return JSON.parse(run.stdout) as MigrationResult;
  }

  async function rotate(): Promise<string> {
    const rotated = await admin.post('/v1/backends/hsm/rotate', on().config.adminToken);
    assert.equal(rotated.status, 200, rotated.text);
    return (rotated.body as { keyId: string }).keyId;
  }

  /** key_id of every Secret, read from etcd. */
  async function storedKeyIds(): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    for (const [name, raw] of await on().cluster.etcd.secrets()) {
      const value = decodeStored(raw);
      found.set(name, value.kind === 'kms-v2' ? value.keyId : value.kind);
    }
    return found;
  }

  async function assertAllUnder(keyId: string): Promise<void> {
    const stored = await storedKeyIds();
    assert.equal(stored.size, SECRETS);
    const others = [...stored].filter(([, id]) => id !== keyId).map(([name]) => name);
    assert.deepEqual(others, [], `${others.length} Secrets not under ${keyId}`);
  }

  async function resourceVersions(): Promise<Map<string, string>> {
    const list = JSON.parse(
      await on().cluster.kubectl(['get', 'secrets', '-n', 'default', '-o', 'json']),
    ) as {
      items: { metadata: { name: string; resourceVersion: string } }[];
    };
    return new Map(list.items.map(item => [`default/${item.metadata.name}`, item.metadata.resourceVersion]));
  }

  const throughput = (label: string, entry: ResourceResult | undefined, objects: number) => {
    assert.ok(entry !== undefined);
    console.log(
      `# ${label}: ${objects} objects in ${entry.durationMs} ms = ${((objects * 1000) / entry.durationMs).toFixed(1)} objects/s`,
    );
  };

  const step = orderedSteps();

  step(
    'after a rotation, migrate waits for the re-seed and a StorageVersionMigration moves every Secret to the new key_id',
    async () => {
      const oldKeyId = (await storedKeyIds()).values().next().value;
      const keyId = await rotate();
      assert.notEqual(keyId, oldKeyId);

      const result = await migrated();
      assert.equal(result.keyId, keyId);
      assert.equal(result.alreadyDone, false);
      const secrets = result.resources[0];
      assert.equal(secrets?.mode, 'svm');
      assert.equal(secrets.status, 'migrated');
      assert.match(secrets.migration ?? '', /^kms-broker-secrets-[0-9a-f]{16}$/);
      throughput('SVM (StorageVersionMigration, kube-controller-manager)', secrets, SECRETS);
      await assertAllUnder(keyId);
    },
  );

  step('a rerun for the same key_id is a no-op that says so', async () => {
    const before = await resourceVersions();
    const run = await migrate();
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as MigrationResult;
    assert.equal(result.alreadyDone, true);
    assert.equal(result.resources[0]?.status, 'already-done');
    assert.deepEqual(await resourceVersions(), before);

    const human = await new Promise<{ error: Error | null; stdout: string }>(resolve =>
      execFile(
        CLI,
        args().filter(arg => arg !== '--json'),
        { timeout: CLI_TIMEOUT_MS },
        (error, stdout) => resolve({ error, stdout }),
      ),
    );
    assert.equal(human.error, null);
    assert.match(human.stdout, /^already migrated: .*nothing to do/);
  });

  step('a second rotation gets a new StorageVersionMigration (the controller now warm)', async () => {
    const keyId = await rotate();
    const result = await migrated();
    const secrets = result.resources[0];
    assert.equal(secrets?.mode, 'svm');
    assert.equal(secrets.status, 'migrated');
    throughput('SVM, second run on a warm kube-controller-manager', secrets, SECRETS);
    await assertAllUnder(keyId);
  });

  step('--mode rewrite re-encrypts through paged no-op updates', async () => {
    const keyId = await rotate();
    const result = await migrated('--mode', 'rewrite', '--rate', '0');
    const secrets = result.resources[0];
    assert.equal(secrets?.mode, 'rewrite');
    assert.equal(secrets.rewritten, SECRETS);
    throughput('rewrite (--rate 0)', secrets, SECRETS);
    await assertAllUnder(keyId);
  });

  step('killed halfway (SIGKILL), a rerun finishes without rewriting what was done', async () => {
    const keyId = await rotate();
    const child = spawn(CLI, args('--mode', 'rewrite', '--rate', '20'), { stdio: 'ignore' });
    const exited = new Promise<void>(resolve => child.once('exit', () => resolve()));
    const pid = child.pid;
    assert.ok(pid !== undefined);
    const entryKey = `${on().cluster.server} sha256:${createHash('sha256').update(keyId).digest('hex')}`;
    const recorded = () => {
      const state = JSON.parse(readFileSync(stateFile, 'utf8')) as {
        migrations: Record<string, { resources: Record<string, { lastDone?: string; rewritten?: number }> }>;
      };
      return state.migrations[entryKey]?.resources.secrets;
    };
    try {
      // Until the state file shows a third of the Secrets done (the re-seed wait comes first).
      await pollFor(
        'migrate to rewrite a third of the Secrets',
        () => Promise.resolve((recorded()?.rewritten ?? 0) >= SECRETS / 3 ? true : undefined),
        { timeoutMs: 180_000, intervalMs: 100 },
      );
    } finally {
      process.kill(pid, 'SIGKILL');
      await exited;
    }
    // What the killed run did, as the state file it left says (read after the kill).
    const left = recorded();
    assert.ok(left?.lastDone !== undefined && left.rewritten !== undefined);
    assert.ok(left.rewritten < SECRETS, `the kill came too late: ${left.rewritten} done`);
    const doneBefore = [...(await storedKeyIds())].filter(([, id]) => id === keyId).map(([name]) => name);
    const versionsBefore = await resourceVersions();

    const result = await migrated('--mode', 'rewrite', '--rate', '0');
    const secrets = result.resources[0];
    console.log(
      `# killed after ${left.rewritten} of ${SECRETS} (${doneBefore.length} under the new key_id in etcd); the rerun rewrote ${secrets?.rewritten}`,
    );
    assert.equal(secrets?.resumedFrom, left.rewritten);
    assert.equal(
      secrets.rewritten,
      SECRETS - left.rewritten,
      'the rerun rewrote only what came after the last object done',
    );
    const versionsAfter = await resourceVersions();
    const lastDone = left.lastDone;
    const touched = [...versionsBefore].filter(
      ([name, version]) => name <= lastDone && versionsAfter.get(name) !== version,
    );
    assert.deepEqual(touched, [], 'objects done before the kill were written again');
    // At most the one in flight at the kill was rewritten without being recorded.
    assert.ok(
      doneBefore.length - left.rewritten <= 1,
      `${doneBefore.length} under the new key_id, ${left.rewritten} recorded`,
    );
    await assertAllUnder(keyId);
  });

  step(
    'where the apiserver serves no storagemigration API, migrate rewrites by itself; --mode svm is refused',
    async () => {
      const { cluster, config } = on();
      await cluster.startApiserver({
        providers: [kms('kms-broker', config.path), identity],
        runtimeConfig: 'storagemigration.k8s.io/v1=false',
      });
      const discovery = await cluster.get('/apis/storagemigration.k8s.io');
      assert.equal(discovery.status, 404, discovery.text);

      const keyId = await rotate();
      const refused = await migrate('--mode', 'svm');
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /serves no storagemigration\.k8s\.io API.*--mode rewrite/);

      const result = await migrated('--rate', '0');
      assert.equal(result.resources[0]?.mode, 'rewrite');
      assert.equal(result.resources[0]?.rewritten, SECRETS);
      await assertAllUnder(keyId);
    },
  );
});
