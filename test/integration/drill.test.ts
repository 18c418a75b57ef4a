// `kms-broker drill` and `recover` through the real CLI, on a real etcd snapshot of values made
// for real: seeds a broker on SoftHSM and OpenBao wrapped (wrap: all), one of them also wrapped
// to an escrow key made by `escrow init`, the data encrypted as kube-apiserver does (KDF) over
// Secrets serialized as it stores them. The broker is stopped before any drill: neither command
// needs it. Snapshots are taken with etcd's Maintenance.Snapshot and restored by etcdutl.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
  mkdtempSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { decodeEnvelope, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { ESCROW_MECHANISM } from '../../src/escrow/hybrid-wrap.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import type { DrillReport } from '../../src/recovery/drill-report.ts';
import { startBrokerProcess } from '../helpers/broker-process.ts';
import { drillArgs, recoverArgs } from '../helpers/recovery-cli.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import { pkcs11Backend, vaultBackend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { putAll } from '../helpers/etcd-kv.ts';
import { saveSnapshot } from '../helpers/etcd-snapshot.ts';
import { kdfEncrypt } from '../helpers/kube-encrypt.ts';
import { storedSecret } from '../helpers/kube-objects.ts';
import { startEtcd, type Etcd } from '../helpers/kube-etcd.ts';
import { enableTransit, startDevServer, type BaoServer } from '../helpers/openbao.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { identityValue, kmsV2Value } from '../helpers/stored-values.ts';

interface MadeSecret {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly data: Record<string, Buffer>;
}

describe('kms-broker drill and recover', () => {
  let dir: string;
  let token: SoftHsmToken;
  let bao: BaoServer;
  let config: TestConfig;
  let etcd: Etcd;
  let snapshot: string;
  let escrowArgs: string[];
  let escrowFingerprint: string;
  const secrets: MadeSecret[] = [];
  /** Must appear in no output: the seeds. */
  const seeds: Buffer[] = [];
  const outputs: CliRun[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-drill-'));
    token = createToken();
    bao = await startDevServer();
    await enableTransit(bao);
    const baoToken = join(dir, 'bao-token');
    writeFileSync(baoToken, `${bao.rootToken}\n`, { mode: 0o600 });
    etcd = await startEtcd(dir);

    const init = await runCli([
      'escrow',
      'init',
      '--out',
      join(dir, 'escrow'),
      '--shares',
      '3',
      '--threshold',
      '2',
      '--json',
    ]);
    assert.equal(init.code, 0, init.stderr);
    const ceremony = JSON.parse(init.stdout) as {
      fingerprint: string;
      publicKey: string;
      shares: { file: string }[];
    };
    escrowFingerprint = ceremony.fingerprint;
    escrowArgs = [
      '--escrow-public-key',
      ceremony.publicKey,
      '--share',
      ceremony.shares[0]?.file ?? '',
      ceremony.shares[2]?.file ?? '',
    ];
    config = writeConfig(token, {
      backends: [
        pkcs11Backend(token),
        vaultBackend(bao.address, { method: 'token', tokenFile: baoToken }),
        { name: 'escrow', type: 'escrow', publicKeyFile: ceremony.publicKey },
      ],
      failover: { order: ['hsm', 'vault', 'escrow'], wrap: 'all' },
    });

    const broker = await startBrokerProcess(config.path, token.env);
    const client = createKmsV2Client(config.socket);
    const entries: [string, Buffer][] = [];
    try {
      // Two seeds, as two apiserver key_ids would make, each wrapped by the HSM, Transit and the
      // escrow backend; the second stored without its escrow wrap, as data written before the
      // escrow backend was added is.
      for (const [namespace, count, escrowed] of [
        ['prod', 4, true],
        ['dev', 2, false],
      ] as const) {
        const seed = randomBytes(32);
        seeds.push(seed);
        const encrypted = await client.encrypt(seed);
        const { [`escrow${WRAP_ANNOTATION_SUFFIX}`]: escrowWrap, ...others } = encrypted.annotations;
        assert.ok(escrowWrap !== undefined, 'the escrow backend wrapped the seed');
        assert.equal(decodeEnvelope(escrowWrap).header.mechanism, ESCROW_MECHANISM);
        assert.equal(decodeEnvelope(escrowWrap).header.keyVersion, escrowFingerprint);
        const annotations = escrowed ? encrypted.annotations : others;
        for (let i = 0; i < count; i++) {
          const made = {
            namespace,
            name: `secret-${i}`,
            key: `/registry/secrets/${namespace}/secret-${i}`,
            data: { password: randomBytes(12), note: Buffer.from(`n${i}`) },
          };
          secrets.push(made);
          const plaintext = storedSecret(namespace, made.name, made.data);
          const encryptedData = kdfEncrypt(seed, plaintext, made.key);
          entries.push([
            made.key,
            kmsV2Value('kms-broker', {
              keyId: encrypted.key_id,
              ciphertext: encrypted.ciphertext,
              annotations,
              encryptedData,
            }),
          ]);
        }
      }
    } finally {
      client.close();
      await broker.stop();
    }
    entries.push(['/registry/configmaps/prod/plain', identityValue()]);
    entries.push([
      '/registry/secrets/other/foreign',
      kmsV2Value('other-plugin', { keyId: 'other-key', ciphertext: randomBytes(40) }),
    ]);
    await putAll(etcd.url, entries);
    snapshot = join(dir, 'snapshot.db');
    await saveSnapshot(etcd.url, snapshot);
  });

  after(async () => {
    await etcd?.stop();
    await bao?.stop();
    token?.remove();
    rmSync(dir, { recursive: true, force: true });
    // Nothing of a seed in any output.
    for (const run of outputs)
      for (const seed of seeds)
        for (const encoding of ['hex', 'base64'] as const) {
          assert.ok(
            !run.stdout.includes(seed.toString(encoding)) && !run.stderr.includes(seed.toString(encoding)),
          );
        }
  });

  async function cli(args: readonly string[]): Promise<CliRun> {
    const run = await runCli(args, { env: token.env, timeoutMs: 120_000 });
    outputs.push(run);
    return run;
  }
  const drill = (...args: string[]) => cli([...drillArgs(config.path, snapshot), ...args]);
  const snapshotFolders = () =>
    readdirSync(tmpdir()).filter(name => name.startsWith('kms-broker-snapshot-')).length;

  it('counts every value and what each backend and the escrow alone recover; --full decrypts them all', async () => {
    const folders = snapshotFolders();
    const run = await drill('--full', '--json', ...escrowArgs);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as DrillReport;
    assert.deepEqual(report.totals, {
      values: 8,
      ours: 6,
      notOurs: 2,
      byKind: { 'kms-v2': 6, identity: 1, 'kms-v2-other-plugin': 1 },
      seeds: 2,
      escrowWrapped: 4,
    });
    assert.deepEqual(
      report.sources.map(row => [row.name, row.status, row.recovers, row.onlyIt.count]),
      [
        ['hsm', 'reachable', 6, 0],
        ['vault', 'reachable', 6, 0],
        ['escrow', 'given', 4, 0],
      ],
    );
    assert.equal(report.sources[2]?.reason, `escrow key ${escrowFingerprint} (backend escrow)`);
    assert.deepEqual(report.unrecoverable, { count: 0, keys: [] });
    assert.deepEqual(report.decrypt, { mode: 'full', decrypted: 6, failed: { count: 0, keys: [] } });
    assert.equal(report.backendCalls, 4, 'one unwrap per seed and backend, not per value');
    assert.equal(report.allRecoverable, true);
    assert.equal(snapshotFolders(), folders, 'the restored copy is removed');
  });

  it('decrypts a sample (the first value of each seed with --sample 0) and prints a table', async () => {
    const run = await drill('--sample', '0');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /Per source \(each alone\):/);
    assert.match(run.stdout, /hsm\s+reachable\s+6\/6\s+0/);
    assert.match(run.stdout, /2 decrypted to the stored object, 0 failed/);
    assert.match(run.stdout, /every value is recoverable \(exit 0\)/);
    // The escrow backend is not opened: without shares its row says so.
    assert.match(run.stdout, /escrow\s+not given \(no shares given \(backend escrow\)/);
    assert.match(run.stderr, /scanning etcd: 8\/8 values/);
  });

  it('refuses a truncated snapshot with etcdutl reason, and a missing etcdutl naming --etcd-bin-dir', async () => {
    const truncated = join(dir, 'truncated.db');
    const bytes = readFileSync(snapshot);
    writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const folders = snapshotFolders();
    const run = await cli([...drillArgs(config.path, truncated)]);
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /^kms-broker: SNAPSHOT_INVALID: etcdutl refused the snapshot .*truncated\.db: \S.*take a new snapshot/m,
    );
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(snapshotFolders(), folders);
    const empty = join(dir, 'no-bin');
    mkdirSync(empty);
    const missing = await cli([
      'drill',
      '--config',
      config.path,
      '--snapshot',
      snapshot,
      '--etcd-bin-dir',
      empty,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ETCD_TOOL_MISSING: no executable etcdutl in --etcd-bin-dir/);
  });

  it('records its state (0600) with --state and refuses that state for another snapshot', async () => {
    const state = join(dir, 'drill-state.json');
    const run = await drill('--json', '--state', state);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(statSync(state).mode & 0o777, 0o600);
    const recorded = JSON.parse(readFileSync(state, 'utf8')) as {
      finished: boolean;
      read: number;
      tally: { ours: number };
    };
    assert.deepEqual([recorded.finished, recorded.read, recorded.tally.ours], [true, 8, 6]);
    const other = join(dir, 'other.db');
    await putAll(etcd.url, [['/registry/configmaps/prod/later', identityValue()]]);
    await saveSnapshot(etcd.url, other);
    const refused = await cli([...drillArgs(config.path, other), '--state', state]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /DRILL_STATE_INVALID: .*belongs to a drill of snapshot sha256:/);
  });

  it('recovers Secrets as 0600 manifests with the escrow alone, never overwrites, and refuses a folder others can enter', async () => {
    const out = join(dir, 'recovered');
    const run = await cli([...recoverArgs(snapshot, out), '--json', ...escrowArgs]);
    // The escrow wrapped only the first seed: the dev Secrets cannot be recovered with it.
    assert.equal(run.code, 3, run.stderr);
    const result = JSON.parse(run.stdout) as {
      files: number;
      notOurs: number;
      failed: { count: number; values: { key: string }[] };
    };
    assert.equal(result.files, 4);
    assert.equal(result.notOurs, 2);
    assert.deepEqual(
      result.failed.values.map(value => value.key),
      ['/registry/secrets/dev/secret-0', '/registry/secrets/dev/secret-1'],
    );
    assert.equal(statSync(out).mode & 0o777, 0o700);
    for (const made of secrets.filter(secret => secret.namespace === 'prod')) {
      const file = join(out, 'secrets', 'prod', `${made.name}.yaml`);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(parse(readFileSync(file, 'utf8')), {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: made.name, namespace: 'prod', labels: { app: 'drill' } },
        type: 'Opaque',
        data: { note: made.data.note?.toString('base64'), password: made.data.password?.toString('base64') },
      });
    }

    // The backends recover the rest; the files already written are not touched.
    const again = await cli([
      ...recoverArgs(snapshot, out),
      '--config',
      config.path,
      '--resource',
      'secrets',
      '--json',
    ]);
    assert.equal(again.code, 3, again.stderr);
    const second = JSON.parse(again.stdout) as {
      files: number;
      failed: { count: number; values: { reason: string }[] };
    };
    assert.equal(second.files, 2);
    assert.equal(second.failed.count, 4);
    assert.match(second.failed.values[0]?.reason ?? '', /exists already; not overwritten/);

    const open = join(dir, 'open-folder');
    mkdirSync(open);
    chmodSync(open, 0o755);
    const refused = await cli([...recoverArgs(snapshot, open), '--config', config.path]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /RECOVERY_OUTPUT_REFUSED: .*mode 755/);
    assert.deepEqual(readdirSync(open), []);
  });

  it('after the Transit key is deleted: only the HSM recovers, and a Vault-only config recovers nothing (exit 3)', async () => {
    const api = bao.api();
    await api.write('transit/keys/kek/config', { deletion_allowed: true });
    await api.delete('transit/keys/kek');
    const run = await drill('--json');
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as DrillReport;
    const [hsm, vault] = report.sources;
    assert.deepEqual([hsm?.name, hsm?.recovers, hsm?.onlyIt.count], ['hsm', 6, 6]);
    assert.deepEqual([vault?.name, vault?.recovers], ['vault', 0]);
    // Failures count the values a reason cost a wrap; the unwraps were still one per seed.
    assert.equal(
      Object.values(vault?.failures ?? {}).reduce((sum, n) => sum + n, 0),
      6,
    );
    assert.equal(report.backendCalls, 4);

    const vaultOnly = writeConfig(undefined, {
      backends: [vaultBackend(bao.address, { method: 'token', tokenFile: join(dir, 'bao-token') })],
      failover: { order: ['vault'] },
    });
    const lost = await cli([...drillArgs(vaultOnly.path, snapshot), '--json']);
    assert.equal(lost.code, 3, lost.stderr);
    const lostReport = JSON.parse(lost.stdout) as DrillReport;
    assert.deepEqual(
      lostReport.sources.map(row => [row.name, row.status, row.reason ?? '', Object.keys(row.failures)]),
      [
        [
          'vault',
          'reachable',
          '',
          [
            'INVALID_CIPHERTEXT: backend vault: Vault could not decrypt the wrapped key (tampered, or from another key)',
          ],
        ],
        ['escrow', 'not given', 'no shares given; --escrow-public-key and --share check it', []],
        ['hsm', 'unreachable', 'not in the config', ["backend 'hsm' is not in the config"]],
      ],
    );
    assert.equal(lostReport.unrecoverable.count, 6);
    assert.deepEqual(lostReport.unrecoverable.keys, secrets.map(secret => secret.key).sort());
    assert.equal(lostReport.allRecoverable, false);
    // With the escrow: the values stored with its wrap are saved, the others still lost.
    const escrowed = await cli([...drillArgs(vaultOnly.path, snapshot), '--json', ...escrowArgs]);
    assert.equal(escrowed.code, 3, escrowed.stderr);
    const escrowedReport = JSON.parse(escrowed.stdout) as DrillReport;
    assert.deepEqual(escrowedReport.unrecoverable.keys, [
      '/registry/secrets/dev/secret-0',
      '/registry/secrets/dev/secret-1',
    ]);
    assert.equal(escrowedReport.sources.find(row => row.name === 'escrow')?.onlyIt.count, 4);
    const text = await cli([...drillArgs(vaultOnly.path, snapshot)]);
    assert.equal(text.code, 3);
    assert.match(text.stdout, /Recoverable by no source:\n {2}\/registry\/secrets\/dev\/secret-0/);
  });
});
