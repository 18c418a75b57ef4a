// docs/disaster-recovery.md end to end on a real control plane: kube-apiserver 1.37 and etcd,
// Secrets encrypted through kms-broker with `wrap: all` over SoftHSM and OpenBao Transit and an
// escrow key from a real `kms-broker escrow init`, written under two HSM key versions. An etcd
// snapshot is drilled (every Secret decrypted, each source alone), drilled again after the
// Transit key is deleted, and finally, with the HSM token wiped as well, rebuilt from the
// snapshot and three of the five escrow shares alone into a new cluster. Bad inputs (a
// truncated snapshot, a mistyped share, another escrow key's shares) get clear errors.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  copyFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { parse } from 'yaml';
import type { DrillReport } from '../../src/recovery/drill-report.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { drillArgs, recoverArgs } from '../helpers/recovery-cli.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import {
  escrowBackend,
  pkcs11Backend,
  vaultBackend,
  writeConfig,
  type TestConfig,
} from '../helpers/config.ts';
import { saveSnapshot } from '../helpers/etcd-snapshot.ts';
import { createSecret, secretValue, startCluster, type Cluster } from '../helpers/kube-cluster.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { decodeStored } from '../helpers/kube-etcd.ts';
import { pollFor } from '../helpers/kube-process.ts';
import { enableTransit, startDevServer, type BaoServer } from '../helpers/openbao.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

/** Secrets written under each HSM key version. */
const PER_VERSION = 8;
const LONG_MS = 180_000;

describe('disaster recovery, as docs/disaster-recovery.md runs it, on kube-apiserver 1.37 and etcd', () => {
  let dir: string;
  let token: SoftHsmToken;
  let bao: BaoServer;
  let config: TestConfig;
  let broker: BrokerProcess | undefined;
  let cluster: Cluster | undefined;
  let snapshot: string;
  const ceremony = (name: string) => join(dir, name);
  const share = (name: string, index: number) => join(ceremony(name), `share-${index}-of-5.txt`);
  const publicKey = (name: string) => join(ceremony(name), 'escrow-public.pem');
  /** Three of the five shares: the threshold. */
  const escrowFlags = (name = 'ceremony', shares = [1, 3, 5]) => [
    '--escrow-public-key',
    publicKey(name),
    ...shares.flatMap(index => ['--share', share(name, index)]),
  ];
  /** Secret name → its value, and the key_id it was written under. */
  const written = new Map<string, string>();
  const step = orderedSteps();

  const cli = (args: readonly string[]): Promise<CliRun> =>
    runCli(args, { env: token.env, timeoutMs: LONG_MS });
  const drill = async (args: readonly string[]): Promise<{ run: CliRun; report: DrillReport }> => {
    const run = await cli([...drillArgs(config.path, snapshot), '--json', ...args]);
    assert.ok(run.code === 0 || run.code === 3, `drill exited ${run.code}: ${run.stderr}`);
    return { run, report: JSON.parse(run.stdout) as DrillReport };
  };
  const sources = (report: DrillReport) =>
    Object.fromEntries(report.sources.map(row => [row.name, [row.status, row.recovers, row.onlyIt.count]]));
  const on = () => {
    assert.ok(cluster !== undefined, 'the cluster did not start');
    return cluster;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-dr-'));
    token = createToken('dr');
    bao = await startDevServer();
    await enableTransit(bao);
    writeFileSync(join(dir, 'bao-token'), `${bao.rootToken}\n`, { mode: 0o600 });
  });

  after(async () => {
    await cluster?.stop();
    await broker?.stop();
    await bao?.stop();
    token?.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  step('the escrow ceremony: a 3-of-5 key, its shares checked at once', async () => {
    for (const name of ['ceremony', 'other-cluster']) {
      const init = await cli([
        'escrow',
        'init',
        '--out',
        ceremony(name),
        '--shares',
        '5',
        '--threshold',
        '3',
      ]);
      assert.equal(init.code, 0, init.stderr);
    }
    const verify = await cli([
      'escrow',
      'verify-shares',
      '--public-key',
      publicKey('ceremony'),
      share('ceremony', 1),
      share('ceremony', 3),
      share('ceremony', 5),
    ]);
    assert.equal(verify.code, 0, verify.stderr);
  });

  step(
    'Secrets written through the broker under two HSM key versions, each seed also wrapped by Transit and the escrow',
    async () => {
      config = writeConfig(token, {
        backends: [
          pkcs11Backend(token),
          vaultBackend(bao.address, { method: 'token', tokenFile: join(dir, 'bao-token') }),
          escrowBackend(publicKey('ceremony')),
        ],
        failover: { order: ['hsm', 'vault', 'escrow'], wrap: 'all' },
      });
      broker = await startBrokerProcess(config.path, token.env);
      cluster = await startCluster();
      await cluster.startApiserver({ providers: [kms('kms-broker', config.path), identity] });
      const admin = adminClient(config.adminSocket);
      const keyIdOf = async (name: string) => {
        const stored = decodeStored((await on().etcd.secrets()).get(`default/${name}`) ?? Buffer.alloc(0));
        return stored.kind === 'kms-v2' ? stored.keyId : undefined;
      };
      const writeAll = async (prefix: string) => {
        for (let i = 0; i < PER_VERSION; i++) {
          const name = `${prefix}-${i}`;
          written.set(name, randomBytes(16).toString('base64url'));
          await createSecret(on(), name, written.get(name) ?? '');
        }
      };
      await writeAll('v1');
      const firstKeyId = await keyIdOf('v1-0');
      const rotated = await admin.post('/v1/backends/hsm/rotate', config.adminToken);
      assert.equal(rotated.status, 200, rotated.text);
      const secondKeyId = (rotated.body as { keyId: string }).keyId;
      // The apiserver takes the new key_id on its next Status; asking /healthz/kms-providers runs
      // one (cached 20 s). A probe Secret shows when new writes carry it.
      let probes = 0;
      await pollFor(
        'the apiserver writing under the rotated key_id',
        async () => {
          await on().get('/healthz/kms-providers');
          const name = `probe-${probes++}`;
          written.set(name, randomBytes(16).toString('base64url'));
          await createSecret(on(), name, written.get(name) ?? '');
          return (await keyIdOf(name)) === secondKeyId ? true : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 2000 },
      );
      await writeAll('v2');
      assert.notEqual(firstKeyId, secondKeyId);
      assert.equal(await keyIdOf('v1-0'), firstKeyId);
      assert.equal(await keyIdOf('v2-0'), secondKeyId);
      snapshot = join(dir, 'etcd.db');
      await saveSnapshot(on().etcd.url, snapshot);
    },
  );

  step(
    'the monthly drill: every Secret decrypted, each one recoverable by the HSM, Transit and the escrow alone',
    async () => {
      const { run, report } = await drill(['--full', ...escrowFlags()]);
      assert.equal(run.code, 0, run.stdout);
      const secrets = written.size;
      assert.equal(report.totals.ours, secrets);
      assert.equal(report.totals.byKind['kms-v2'], secrets);
      assert.equal(report.totals.escrowWrapped, secrets);
      assert.deepEqual(sources(report), {
        hsm: ['reachable', secrets, 0],
        vault: ['reachable', secrets, 0],
        escrow: ['given', secrets, 0],
      });
      assert.deepEqual(report.unrecoverable, { count: 0, keys: [] });
      assert.deepEqual(report.decrypt, { mode: 'full', decrypted: secrets, failed: { count: 0, keys: [] } });
      process.stdout.write(
        `# drill: ${report.totals.values} values, ${secrets} Secrets of the broker, ${report.totals.seeds} seeds, ${report.backendCalls} backend calls, ${report.durationMs} ms\n`,
      );
    },
  );

  step(
    'bad inputs get clear errors: a truncated snapshot, a mistyped share, another cluster’s escrow key',
    async () => {
      const truncated = join(dir, 'truncated.db');
      copyFileSync(snapshot, truncated);
      truncateSync(truncated, Math.floor(statSync(snapshot).size / 2));
      const cut = await cli([...drillArgs(config.path, truncated)]);
      assert.equal(cut.code, 1);
      assert.match(cut.stderr, /SNAPSHOT_INVALID: .*truncated\.db/);
      assert.doesNotMatch(cut.stderr, /\n\s+at /, 'a stack trace');

      const typo = join(dir, 'typo.txt');
      const text = readFileSync(share('ceremony', 3), 'utf8');
      const at = text.lastIndexOf('-') - 3;
      writeFileSync(typo, `${text.slice(0, at)}${text[at] === 'A' ? 'B' : 'A'}${text.slice(at + 1)}`, {
        mode: 0o600,
      });
      const mistyped = await cli([
        ...drillArgs(config.path, snapshot),
        '--escrow-public-key',
        publicKey('ceremony'),
        '--share',
        share('ceremony', 1),
        '--share',
        typo,
        '--share',
        share('ceremony', 5),
      ]);
      assert.equal(mistyped.code, 1);
      assert.match(mistyped.stderr, /ESCROW_SHARES_INVALID: .*typo\.txt/);

      // The shares of another cluster's escrow key, with that key: they rebuild it, but no wrap
      // here is to it, and the drill says so for every value.
      const { report } = await drill(escrowFlags('other-cluster'));
      const escrow = report.sources.find(row => row.name === 'escrow');
      assert.equal(escrow?.recovers, 0);
      assert.match(Object.keys(escrow?.failures ?? {}).join(), /escrow key [0-9a-f]{8} not given/);
    },
  );

  step(
    'with the Transit key deleted, the drill says the HSM alone still recovers everything, and what losing it would cost',
    async () => {
      const api = bao.api();
      await api.write('transit/keys/kek/config', { deletion_allowed: true });
      await api.delete('transit/keys/kek');
      const { run, report } = await drill([]);
      assert.equal(run.code, 0, run.stdout);
      const secrets = written.size;
      assert.deepEqual(sources(report), {
        hsm: ['reachable', secrets, secrets],
        vault: ['reachable', 0, 0],
        escrow: ['not given', 0, 0],
      });
      assert.equal(report.sources.find(row => row.name === 'hsm')?.onlyIt.keys.length, secrets);
      assert.deepEqual(report.unrecoverable, { count: 0, keys: [] });
    },
  );

  step(
    'every online key gone (HSM token wiped, Transit key deleted): recover from the snapshot and three shares alone',
    async () => {
      await on().stop();
      cluster = undefined;
      await broker?.stop();
      broker = undefined;
      token.remove();

      const out = join(dir, 'recovered');
      const recovered = await cli([
        ...recoverArgs(snapshot, out),
        '--resource',
        'secrets',
        '--json',
        ...escrowFlags(),
      ]);
      assert.equal(recovered.code, 0, recovered.stderr);
      assert.equal(statSync(out).mode & 0o777, 0o700);

      // A new cluster, no encryption: what the recovered manifests are for.
      cluster = await startCluster();
      await cluster.startApiserver({});
      for (const [name, value] of written) {
        const file = join(out, 'secrets', 'default', `${name}.yaml`);
        assert.equal(statSync(file).mode & 0o777, 0o600);
        const manifest = parse(readFileSync(file, 'utf8')) as { data: { k: string } };
        assert.equal(Buffer.from(manifest.data.k, 'base64').toString(), value);
        await cluster.kubectl(['apply', '-f', file]);
        assert.equal(await secretValue(cluster, 'default', name, 'k'), value);
      }
    },
  );
});
