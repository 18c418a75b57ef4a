// Three brokers, one per "node", sharing their key state in a real three-member etcd, on one
// SoftHSM token (as nodes share an HSM partition) and one OpenBao: a rotation, a failover
// change and a retirement made on one node reach all; a new key_id is advertised only once
// every live broker confirmed it; a broker that is gone is waited for only until its lease
// lapses and catches up when it returns; etcd losing a member changes nothing; etcd gone
// leaves Encrypt and Decrypt serving, refuses admin changes, and a broker still starts.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient, problem, type AdminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { runCli } from '../helpers/cli-run.ts';
import { pkcs11Backend, vaultBackend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.ts';
import { pollFor } from '../helpers/kube-process.ts';
import { enableTransit, startDevServer, type BaoServer } from '../helpers/openbao.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const LEASE_TTL_MS = 3000;
const NODES = ['node-1', 'node-2', 'node-3'] as const;

interface Node {
  readonly name: string;
  readonly config: TestConfig;
  broker: BrokerProcess | undefined;
  kms: KmsV2Client;
  admin: AdminClient;
}

interface ClusterBody {
  keyId?: string;
  converged: boolean;
  etcd: { reachable: boolean };
  members: { node: string; keyId: string }[];
}

describe('brokers sharing their key state over etcd', { timeout: 600_000 }, () => {
  const step = orderedSteps();
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-cluster-'));
  let etcd: EtcdCluster;
  let token: SoftHsmToken;
  let vault: BaoServer;
  const nodes: Node[] = [];
  /** A value encrypted before the first rotation, under hsm version 1. */
  let early: { ciphertext: Buffer; keyId: string; plaintext: Buffer };

  const node = (index: number) => nodes[index] as Node;
  const start = async (entry: Node) => {
    entry.broker = await startBrokerProcess(entry.config.path, token.env);
  };
  const keyIds = async (entries = nodes) =>
    Promise.all(entries.map(async entry => (await entry.kms.status()).key_id));
  const cluster = async (entry: Node) =>
    (await entry.admin.get('/v1/cluster', entry.config.viewerToken)).body as ClusterBody;
  /** Polls until every node's Status advertises `keyId`; returns how long that took. */
  const converge = async (keyId: string, entries = nodes): Promise<number> => {
    const started = performance.now();
    await pollFor(
      `every broker advertising ${keyId}`,
      async () => ((await keyIds(entries)).every(id => id === keyId) ? true : undefined),
      { timeoutMs: 30_000, intervalMs: 50 },
    );
    return performance.now() - started;
  };
  /** Polls until every node's Decrypt of the early value meets `expect`. */
  const everyNodeReadsEarly = (
    what: string,
    expect: { opened: (plaintext: Buffer) => boolean; refused: (error: { details?: string }) => boolean },
  ) =>
    pollFor(
      what,
      async () => {
        const met = await Promise.all(
          nodes.map(entry =>
            entry.kms
              .decrypt({ ciphertext: early.ciphertext, key_id: early.keyId })
              .then(answer => expect.opened(answer.plaintext), expect.refused),
          ),
        );
        return met.every(Boolean) ? true : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
  const rotate = async (entry: Node, backend: string) => {
    const response = await entry.admin.post(`/v1/backends/${backend}/rotate`, entry.config.adminToken);
    return response;
  };

  before(async () => {
    etcd = await startEtcdCluster(join(dir, 'etcd'), { members: 3 });
    token = createToken();
    vault = await startDevServer();
    await enableTransit(vault);
    const tokenFile = join(dir, 'vault-token');
    writeFileSync(tokenFile, vault.rootToken, { mode: 0o600 });
    for (const name of NODES) {
      const folder = join(dir, name);
      mkdirSync(folder);
      const config = writeConfig(
        undefined,
        {
          backends: [pkcs11Backend(token), vaultBackend(vault.address, { method: 'token', tokenFile })],
          failover: { order: ['hsm', 'vault'], wrap: 'first', hysteresisMs: 0 },
          etcd: { endpoints: [...etcd.endpoints] },
          cluster: {
            name: 'e2e',
            node: name,
            leaseTtlMs: LEASE_TTL_MS,
            promotionTimeoutMs: 60_000,
            convergenceWarnMs: 5000,
          },
        },
        folder,
      );
      nodes.push({
        name,
        config,
        broker: undefined,
        kms: createKmsV2Client(config.socket, 10_000),
        admin: adminClient(config.adminSocket, 90_000),
      });
    }
  });

  after(async () => {
    for (const entry of nodes) {
      entry.kms.close();
      await entry.broker?.stop();
    }
    await etcd?.stop();
    await vault?.stop();
    token?.remove();
  });

  step('the first broker creates the keys and shares them; the others start on the same key_id', async () => {
    await start(node(0));
    await Promise.all([start(node(1)), start(node(2))]);
    const [first, ...rest] = await keyIds();
    for (const keyId of rest) assert.equal(keyId, first);
    const view = await pollFor(
      'three members registered, as every broker sees it',
      async () => {
        const views = await Promise.all(nodes.map(cluster));
        return views.every(body => body.members.length === 3 && body.converged) ? views[0] : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    assert.deepEqual(
      view.members.map(member => member.node),
      [...NODES],
    );
    assert.equal(view.keyId, first);
    const metrics = (await node(1).admin.get('/metrics')).text;
    assert.match(metrics, /^kms_broker_cluster_members 3$/m);
    assert.match(metrics, /^kms_broker_cluster_converged 1$/m);
    assert.match(metrics, /^kms_broker_cluster_etcd_reachable 1$/m);
    const cli = await runCli(['status', '--cluster', '--config', node(2).config.path]);
    assert.equal(cli.code, 0, cli.stderr);
    for (const name of NODES) assert.match(cli.stdout, new RegExp(`^${name}`, 'm'));
    assert.match(cli.stdout, /node-3 \(this\)/);
    assert.match(cli.stdout, /converged: every broker advertises the committed key_id/);
    const plaintext = Buffer.from('written before any rotation');
    const sealed = await node(0).kms.encrypt(plaintext);
    early = { ciphertext: sealed.ciphertext, keyId: sealed.key_id, plaintext };
  });

  step('a rotation on node 1 is confirmed by the others, then advertised by all three', async () => {
    const before = (await keyIds())[0] as string;
    const started = performance.now();
    const response = await rotate(node(0), 'hsm');
    console.log(
      `# rotation with two peers confirming: ${(performance.now() - started).toFixed(0)} ms to commit`,
    );
    assert.equal(response.status, 200, response.text);
    const { keyId } = response.body as { keyId: string };
    assert.notEqual(keyId, before);
    const ms = await converge(keyId);
    console.log(`# convergence after a rotation: ${ms.toFixed(0)} ms after the commit answered`);
    for (const other of [node(1), node(2)])
      await other.broker?.waitForLog(
        record => record.msg === 'answered a key set proposal' && record.confirmed === true,
      );
    // What one node writes under the new key, every other reads.
    const sealed = await node(1).kms.encrypt(Buffer.from('after rotation'));
    assert.equal(sealed.key_id, keyId);
    for (const reader of nodes) {
      const opened = await reader.kms.decrypt({ ciphertext: sealed.ciphertext, key_id: sealed.key_id });
      assert.equal(opened.plaintext.toString(), 'after rotation');
    }
  });

  step('a failover change on node 2 reaches nodes 1 and 3', async () => {
    const read = await node(1).admin.get('/v1/failover', node(1).config.viewerToken);
    const etag = read.headers.etag as string;
    const changed = await node(1).admin.request('/v1/failover', {
      method: 'PUT',
      token: node(1).config.adminToken,
      headers: { 'if-match': etag },
      body: { order: ['vault', 'hsm'], wrap: 'first' },
    });
    assert.equal(changed.status, 200, changed.text);
    const { keyId } = changed.body as { keyId: string };
    const ms = await converge(keyId);
    console.log(`# convergence after a failover change: ${ms.toFixed(0)} ms after the commit answered`);
    for (const entry of [node(0), node(2)]) {
      const setting = (await entry.admin.get('/v1/failover', entry.config.viewerToken)).body;
      assert.deepEqual(setting, { order: ['vault', 'hsm'], wrap: 'first' });
    }
    const sealed = await node(2).kms.encrypt(Buffer.from('via vault'));
    assert.equal(sealed.key_id, keyId);
    const opened = await node(0).kms.decrypt({ ciphertext: sealed.ciphertext, key_id: sealed.key_id });
    assert.equal(opened.plaintext.toString(), 'via vault');
  });

  step('a retirement on node 3 is enforced on every node', async () => {
    const retired = await node(2).admin.request('/v1/backends/hsm/versions/1/retire?force=true', {
      method: 'POST',
      token: node(2).config.adminToken,
    });
    assert.equal(retired.status, 200, retired.text);
    await everyNodeReadsEarly('hsm version 1 refused on every node', {
      opened: () => false,
      refused: error => /retired/i.test(error.details ?? ''),
    });
    const restored = await node(0).admin.request('/v1/backends/hsm/versions/1/restore', {
      method: 'POST',
      token: node(0).config.adminToken,
    });
    assert.equal(restored.status, 200, restored.text);
    await everyNodeReadsEarly('hsm version 1 readable again on every node', {
      opened: plaintext => plaintext.equals(early.plaintext),
      refused: () => false,
    });
  });

  step(
    'a broker gone during a rotation is waited for until its lease lapses, and catches up when it returns',
    async () => {
      await node(2).broker?.stop('SIGKILL');
      // Its lease outlives it: the promotion cannot commit while it is still a member.
      assert.equal((await cluster(node(0))).members.length, 3);
      const started = performance.now();
      const response = await rotate(node(0), 'vault');
      console.log(
        `# rotation waiting out a killed broker's ${LEASE_TTL_MS} ms lease: ${(performance.now() - started).toFixed(0)} ms to commit`,
      );
      assert.equal(response.status, 200, response.text);
      const { keyId } = response.body as { keyId: string };
      const view = await cluster(node(0));
      assert.deepEqual(
        view.members.map(member => member.node),
        ['node-1', 'node-2'],
      );
      await converge(keyId, [node(0), node(1)]);
      await start(node(2));
      assert.equal(
        (await node(2).kms.status()).key_id,
        keyId,
        'the returning broker starts on the committed key_id',
      );
      await pollFor(
        'node 3 registered again, converged',
        async () => {
          const body = await cluster(node(0));
          return body.members.length === 3 && body.converged ? true : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 100 },
      );
    },
  );

  step('one etcd member killed: rotations and KMS calls go on', async () => {
    await etcd.member(0).kill();
    const response = await rotate(node(1), 'vault');
    assert.equal(response.status, 200, response.text);
    await converge((response.body as { keyId: string }).keyId);
    await etcd.member(0).start();
  });

  step(
    'the whole etcd down: KMS calls serve, admin changes are refused, a broker starts from its local copy',
    async () => {
      const [keyId] = await keyIds();
      await Promise.all([0, 1, 2].map(index => etcd.member(index).kill()));
      const refused = await rotate(node(0), 'vault');
      problem(refused, 503, 'CLUSTER_UNAVAILABLE');
      await pollFor(
        'every broker reporting etcd unreachable',
        async () =>
          (await Promise.all(nodes.map(cluster))).every(body => !body.etcd.reachable) ? true : undefined,
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      assert.match((await node(0).admin.get('/metrics')).text, /^kms_broker_cluster_etcd_reachable 0$/m);
      const cli = await runCli(['status', '--cluster', '--config', node(0).config.path]);
      assert.equal(cli.code, 5, 'etcd unreachable: degraded');
      assert.match(cli.stdout, /etcd: UNREACHABLE .*admin changes are refused/);
      const status = await runCli(['status', '--config', node(0).config.path]);
      assert.equal(status.code, 5, status.stdout);
      assert.match(status.stdout, /etcd UNREACHABLE/);
      for (const writer of nodes) {
        const sealed = await writer.kms.encrypt(Buffer.from(`from ${writer.name}`));
        assert.equal(sealed.key_id, keyId);
        for (const reader of nodes) {
          const opened = await reader.kms.decrypt({ ciphertext: sealed.ciphertext, key_id: sealed.key_id });
          assert.equal(opened.plaintext.toString(), `from ${writer.name}`);
        }
      }
      await node(1).broker?.stop();
      await start(node(1));
      assert.equal((await node(1).kms.status()).key_id, keyId, 'started from the local copy');
      const opened = await node(1).kms.decrypt({ ciphertext: early.ciphertext, key_id: early.keyId });
      assert.ok(opened.plaintext.equals(early.plaintext));
    },
  );

  step('etcd back: the brokers reconnect, register again and accept changes', async () => {
    await Promise.all([0, 1, 2].map(index => etcd.member(index).start()));
    await pollFor(
      'three members registered again',
      async () => {
        const body = await cluster(node(0));
        return body.etcd.reachable && body.members.length === 3 && body.converged ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    const response = await rotate(node(2), 'hsm');
    assert.equal(response.status, 200, response.text);
    await converge((response.body as { keyId: string }).keyId);
  });
});
