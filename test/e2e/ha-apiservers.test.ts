// An HA control plane: three kube-apiservers on one etcd, each with its own kms-broker process
// (own socket and config, node-1..3), the three brokers on one SoftHSM token and sharing their
// key state in that same etcd under their own prefix (the production layout). Every apiserver
// reads what the others wrote; a rotation through broker 1 while all three keep writing and
// reading costs no failed request, every apiserver re-seeds on the new key_id, and the brokers
// end converged on it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient, type AdminClient } from '../helpers/admin-http.ts';
import { isWarningOrWorse, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';
import type { Apiserver } from '../helpers/kube-apiserver.ts';
import { startCluster, type Cluster } from '../helpers/kube-cluster.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { decodeStored } from '../helpers/kube-etcd.ts';
import { pollFor } from '../helpers/kube-process.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const PROVIDER = 'kms-broker';
const NODES = ['node-1', 'node-2', 'node-3'] as const;
const SECRETS_PER_APISERVER = 10;
/**
 * Bounds of the load loop during the rotation (rounds, and time). A round takes 0.1–0.5 s, and
 * the re-seed 15–25 s (up to 60 s on a busy machine): the count must not run out before.
 */
const MAX_ROUNDS = 2000;
const MAX_LOAD_MS = 150_000;
/** Rounds still run after every apiserver re-seeded, so all write and read on the new key_id. */
const ROUNDS_AFTER_RESEED = 3;

interface Node {
  readonly name: string;
  readonly config: TestConfig;
  readonly admin: AdminClient;
  broker: BrokerProcess | undefined;
  apiserver: Apiserver;
}

interface ClusterBody {
  keyId?: string;
  converged: boolean;
  members: { node: string; keyId: string }[];
}

/** Every request of the scenario, and every one that did not end as expected. */
class Tally {
  reads = 0;
  writes = 0;
  serverErrors = 0;
  readonly failures: string[] = [];
  fail(what: string): void {
    this.failures.push(what);
  }
}

const secretPath = (name: string) => `/api/v1/namespaces/default/secrets/${name}`;

describe('three kube-apiservers on one etcd, each with its own kms-broker sharing the key state', () => {
  const step = orderedSteps();
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-ha-'));
  let token: SoftHsmToken | undefined;
  let cluster: Cluster | undefined;
  const nodes: Node[] = [];
  /** Every Secret written so far: name → value. */
  const written = new Map<string, string>();
  const tally = new Tally();
  let oldKeyId = '';
  let newKeyId = '';

  const node = (index: number) => nodes[index] as Node;
  const on = () => {
    assert.ok(cluster !== undefined, 'the cluster did not start');
    return cluster;
  };

  async function write(entry: Node, name: string): Promise<void> {
    const value = randomBytes(16).toString('hex');
    tally.writes++;
    try {
      const response = await entry.apiserver.request('POST', '/api/v1/namespaces/default/secrets', {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name },
        data: { k: Buffer.from(value).toString('base64') },
      });
      if (response.status >= 500) tally.serverErrors++;
      if (response.status !== 201)
        tally.fail(`create ${name} via ${entry.name}: ${response.status} ${response.text.slice(0, 300)}`);
      else written.set(name, value);
    } catch (error) {
      tally.fail(`create ${name} via ${entry.name}: ${String(error)}`);
    }
  }

  async function read(entry: Node, name: string): Promise<void> {
    tally.reads++;
    try {
      const response = await entry.apiserver.get(secretPath(name));
      if (response.status >= 500) tally.serverErrors++;
      if (response.status !== 200) {
        tally.fail(`get ${name} via ${entry.name}: ${response.status} ${response.text.slice(0, 300)}`);
        return;
      }
      const body = JSON.parse(response.text) as { data?: { k?: string } };
      const value = Buffer.from(body.data?.k ?? '', 'base64').toString('utf8');
      if (value !== written.get(name)) tally.fail(`get ${name} via ${entry.name}: another value`);
    } catch (error) {
      tally.fail(`get ${name} via ${entry.name}: ${String(error)}`);
    }
  }

  /** The key_id each Secret is stored under, read from etcd directly. */
  async function storedKeyIds(): Promise<Map<string, string>> {
    const keyIds = new Map<string, string>();
    for (const [key, raw] of await on().etcd.secrets()) {
      if (!key.startsWith('default/')) continue;
      const value = decodeStored(raw);
      keyIds.set(key.slice('default/'.length), value.kind === 'kms-v2' ? value.keyId : value.kind);
    }
    return keyIds;
  }

  async function brokerKeyId(entry: Node): Promise<string> {
    const status = await entry.admin.get('/v1/status', entry.config.viewerToken);
    assert.equal(status.status, 200, status.text);
    return (status.body as { keyId: string }).keyId;
  }

  /** The broker's count of Encrypt calls it answered: an apiserver re-seeds with one. */
  async function encryptsAnswered(entry: Node): Promise<number> {
    const metrics = await entry.admin.get('/metrics', entry.config.viewerToken);
    const line = /^kms_broker_kms_requests_total\{method="v2\.Encrypt",outcome="ok"\} (\d+)$/m.exec(
      metrics.text,
    );
    return Number(line?.[1] ?? 0);
  }

  before(async () => {
    token = createToken('ha');
    cluster = await startCluster();
    const apiservers = [cluster, await cluster.addApiserver(), await cluster.addApiserver()];
    for (const [index, name] of NODES.entries()) {
      const folder = join(dir, name);
      mkdirSync(folder);
      const config = writeConfig(
        token,
        {
          // The apiservers' own etcd; the brokers keep their state under /kms-broker/e2e-ha/.
          etcd: { endpoints: [cluster.etcd.url] },
          cluster: { name: 'e2e-ha', node: name, leaseTtlMs: 3000 },
        },
        folder,
      );
      nodes.push({
        name,
        config,
        // A rotation answers once every live broker confirmed the new key.
        admin: adminClient(config.adminSocket, 90_000),
        broker: undefined,
        apiserver: apiservers[index] as Apiserver,
      });
    }
    const env = token.env;
    node(0).broker = await startBrokerProcess(node(0).config.path, env);
    await Promise.all(
      [node(1), node(2)].map(async entry => {
        entry.broker = await startBrokerProcess(entry.config.path, env);
      }),
    );
    const ready: number[] = [];
    for (const entry of nodes)
      ready.push(
        await entry.apiserver.startApiserver({ providers: [kms(PROVIDER, entry.config.path), identity] }),
      );
    process.stdout.write(`# kube-apiservers ready in ${ready.join(', ')} ms\n`);
  });

  after(async () => {
    try {
      // The apiservers first (while etcd runs), then the brokers (still on etcd), then etcd.
      for (const entry of nodes) await entry.apiserver.stopApiserver();
      for (const entry of nodes) {
        await entry.broker?.stop();
        for (const record of entry.broker?.logs ?? [])
          if (isWarningOrWorse(record))
            process.stdout.write(`# broker ${entry.name}: ${JSON.stringify(record)}\n`);
      }
      await cluster?.stop();
    } finally {
      token?.remove();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  step('the three brokers form one cluster on one key_id', async () => {
    const view = await pollFor(
      'three brokers registered and converged',
      async () => {
        const response = await node(0).admin.get('/v1/cluster', node(0).config.viewerToken);
        const body = response.body as ClusterBody;
        return response.status === 200 && body.members.length === 3 && body.converged ? body : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    assert.deepEqual(view.members.map(member => member.node).sort(), [...NODES]);
    oldKeyId = await brokerKeyId(node(0));
    for (const entry of nodes) assert.equal(await brokerKeyId(entry), oldKeyId, entry.name);
  });

  step('each apiserver writes Secrets and every apiserver reads every Secret the others wrote', async () => {
    await Promise.all(
      nodes.map(async (entry, index) => {
        for (let n = 0; n < SECRETS_PER_APISERVER; n++) await write(entry, `before-${index + 1}-${n}`);
      }),
    );
    for (const writer of nodes.keys())
      for (let n = 0; n < SECRETS_PER_APISERVER; n++)
        await Promise.all(
          nodes
            .filter((_, reader) => reader !== writer)
            .map(other => read(other, `before-${writer + 1}-${n}`)),
        );
    assert.deepEqual(tally.failures, []);
    const keyIds = await storedKeyIds();
    assert.equal(keyIds.size, nodes.length * SECRETS_PER_APISERVER);
    for (const [name, keyId] of keyIds) assert.equal(keyId, oldKeyId, `${name} in etcd`);
  });

  step(
    'a rotation through broker 1 under load: no failed request, every apiserver re-seeds on the new key_id',
    async () => {
      const before = Object.keys(Object.fromEntries(written));
      let reseeded = false;
      let roundsAfter = 0;
      let rounds = 0;
      const loadStarted = Date.now();
      const load = (async () => {
        for (; rounds < MAX_ROUNDS && Date.now() - loadStarted < MAX_LOAD_MS; rounds++) {
          if (reseeded && ++roundsAfter > ROUNDS_AFTER_RESEED) break;
          const names = nodes.map((_, index) => `during-${index + 1}-${rounds}`);
          await Promise.all(nodes.map((entry, index) => write(entry, names[index] as string)));
          await Promise.all(
            nodes.flatMap((writer, index) =>
              nodes.filter(other => other !== writer).map(other => read(other, names[index] as string)),
            ),
          );
          const existing = before[rounds % before.length] as string;
          await Promise.all(nodes.map(entry => read(entry, existing)));
        }
      })();

      const encryptsBefore = await Promise.all(nodes.map(encryptsAnswered));
      const rotated = await node(0).admin.post('/v1/backends/hsm/rotate', node(0).config.adminToken);
      assert.equal(rotated.status, 200, rotated.text);
      newKeyId = (rotated.body as { keyId: string }).keyId;
      assert.notEqual(newKeyId, oldKeyId);
      const rotatedAt = Date.now();

      // 1.37 polls Status once a minute; /healthz/kms-providers runs the same probe (cached 20 s
      // after a success), so asking each apiserver once a second makes it see the new key_id and
      // re-seed sooner. Re-seeded = the newest Secret it wrote is stored under the new key_id.
      const healthFailures: string[] = [];
      const pending = new Set(nodes.map((_, index) => index));
      try {
        await pollFor(
          'every apiserver writing under the new key_id',
          async () => {
            for (const index of pending) {
              const health = await node(index).apiserver.get('/healthz/kms-providers');
              if (health.status !== 200)
                healthFailures.push(`${node(index).name}: ${health.status} ${health.text}`);
            }
            const keyIds = await storedKeyIds();
            for (const index of [...pending]) {
              const prefix = `during-${index + 1}-`;
              const newest = Math.max(
                -1,
                ...[...keyIds.keys()]
                  .filter(name => name.startsWith(prefix))
                  .map(name => Number(name.slice(prefix.length))),
              );
              if (keyIds.get(`${prefix}${newest}`) === newKeyId) pending.delete(index);
            }
            return pending.size === 0 ? true : undefined;
          },
          { timeoutMs: 90_000, intervalMs: 1000 },
        );
      } catch (error) {
        // What each side says, so that a timeout tells which one did not move.
        const keyIds = await storedKeyIds();
        const newest = [...keyIds].filter(([name]) => name.startsWith('during-')).slice(-9);
        const brokers = await Promise.all(
          nodes.map(async entry => `${entry.name}=${await brokerKeyId(entry)}`),
        );
        const view = await node(0).admin.get('/v1/cluster', node(0).config.viewerToken);
        const grpc = await Promise.all(
          nodes.map(async entry => {
            const client = createKmsV2Client(entry.config.socket, 10_000);
            try {
              return `${entry.name}=${(await client.status()).key_id}`;
            } finally {
              client.close();
            }
          }),
        );
        const kmsLines = nodes.map(entry =>
          entry.apiserver
            .apiserverOutput()
            .split('\n')
            .filter(line => /kms plugin|failed to rotate/.test(line))
            .slice(-6)
            .join('\n'),
        );
        const metrics = await Promise.all(
          nodes.map(async entry =>
            (await entry.admin.get('/metrics', entry.config.viewerToken)).text
              .split('\n')
              .filter(line => line.startsWith('kms_broker_kms_requests_total'))
              .map(line => `${entry.name} ${line}`)
              .join('\n'),
          ),
        );
        const infos = nodes.map(entry =>
          (entry.broker?.logs ?? [])
            .slice(-15)
            .map(record => `${entry.name} ${JSON.stringify(record)}`)
            .join('\n'),
        );
        console.log(
          `# gRPC Status: ${grpc.join(', ')}\n${kmsLines.join('\n---\n')}\n${metrics.join('\n')}\n${infos.join('\n')}`,
        );
        throw new Error(
          `${String(error)}; still on the old key_id: ${[...pending].map(index => node(index).name).join(', ')}; ` +
            `old ${oldKeyId}, new ${newKeyId}; brokers' Status: ${brokers.join(', ')}; /v1/cluster: ${view.text}; ` +
            `stored (last): ${JSON.stringify(newest)}; healthz failures: ${JSON.stringify(healthFailures.slice(0, 5))}; ` +
            `request failures: ${JSON.stringify(tally.failures.slice(0, 5))}`,
          { cause: error },
        );
      } finally {
        reseeded = true;
        await load;
      }
      const reseedMs = Date.now() - rotatedAt;

      assert.deepEqual(tally.failures, [], `${tally.failures.length} failed requests`);
      // Each apiserver re-seeded through its own broker (one more Encrypt there) ...
      const encryptsAfter = await Promise.all(nodes.map(encryptsAnswered));
      for (const [index, entry] of nodes.entries())
        assert.ok(
          (encryptsAfter[index] as number) > (encryptsBefore[index] as number),
          `${entry.name}: no Encrypt`,
        );
      // ... and once it wrote under the new key_id, it never wrote under the old one again.
      const keyIds = await storedKeyIds();
      for (const index of nodes.keys()) {
        const sequence = [...keyIds]
          .filter(([name]) => name.startsWith(`during-${index + 1}-`))
          .sort(([a], [b]) => Number(a.split('-')[2]) - Number(b.split('-')[2]))
          .map(([, keyId]) => keyId);
        const first = sequence.indexOf(newKeyId);
        assert.ok(first >= 0, `${node(index).name} never wrote under the new key_id`);
        assert.ok(
          sequence.slice(first).every(keyId => keyId === newKeyId),
          `${node(index).name} went back to the old key_id`,
        );
      }
      assert.equal(tally.serverErrors, 0);
      assert.deepEqual(healthFailures, [], '/healthz/kms-providers failed during the rotation');
      assert.ok(
        roundsAfter > ROUNDS_AFTER_RESEED,
        `the load loop ended after ${rounds} rounds, before its bound`,
      );
      process.stdout.write(
        `# HA rotation: ${tally.reads} reads, ${tally.writes} writes, ${tally.failures.length} failures, ` +
          `${tally.serverErrors} HTTP 5xx over ${rounds} rounds; re-seed took ${(reseedMs / 1000).toFixed(1)} s\n`,
      );
    },
  );

  step('all three brokers advertise the new key_id, and each apiserver now writes under it', async () => {
    for (const entry of nodes) {
      const response = await entry.admin.get('/v1/cluster', entry.config.viewerToken);
      assert.equal(response.status, 200, response.text);
      const body = response.body as ClusterBody;
      assert.equal(body.converged, true, `${entry.name}: ${response.text}`);
      assert.equal(body.keyId, newKeyId, entry.name);
      assert.deepEqual(
        body.members.map(member => [member.node, member.keyId]).sort(),
        NODES.map(name => [name, newKeyId]),
      );
      assert.equal(await brokerKeyId(entry), newKeyId, entry.name);
    }
    await Promise.all(nodes.map((entry, index) => write(entry, `after-${index + 1}`)));
    const keyIds = await storedKeyIds();
    for (const index of nodes.keys()) assert.equal(keyIds.get(`after-${index + 1}`), newKeyId);
    // Everything written, under either key_id, still reads through every apiserver.
    const names = [...written.keys()];
    for (let from = 0; from < names.length; from += 20)
      await Promise.all(names.slice(from, from + 20).flatMap(name => nodes.map(entry => read(entry, name))));
    assert.deepEqual(tally.failures, []);
    const old = [...keyIds.values()].filter(keyId => keyId === oldKeyId).length;
    process.stdout.write(
      `# ${written.size} Secrets (${old} under the old key_id) read through all three apiservers\n`,
    );
  });
});
