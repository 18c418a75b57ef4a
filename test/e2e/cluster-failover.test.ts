// Automatic writer switches (wrap: first) across two brokers sharing their state in a real
// etcd: a switch made by one node's rebalancer is confirmed by the other and advertised by
// both; a node that sees a backend healthy which its peer cannot reach proposes in vain and
// the two never flip apart. The backends are in memory so that one "node" can lose a
// backend its peer still reaches (the same keys, seen through two nodes' connections).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { KekBackend } from '../../src/backends/kek.ts';
import { fileStateStore } from '../../src/broker/state/file-state-store.ts';
import { etcdStateStore } from '../../src/cluster/etcd-state-store.ts';
import { BrokerError } from '../../src/errors.ts';
import { createStoreClient } from '../../src/etcd/store-client.ts';
import { startCore, type Core } from '../helpers/core-broker.ts';
import { startEtcd, type Etcd } from '../helpers/kube-etcd.ts';
import { pollFor } from '../helpers/kube-process.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';
import { pino } from 'pino';

/** One node's connection to a shared backend: the same keys, with this node's own outage switch. */
class NodeLink implements KekBackend {
  down = false;
  readonly #shared: MemoryBackend;
  constructor(shared: MemoryBackend) {
    this.#shared = shared;
  }
  get name() {
    return this.#shared.name;
  }
  get type() {
    return this.#shared.type;
  }
  get mechanism() {
    return this.#shared.mechanism;
  }
  get autoCreate() {
    return this.#shared.autoCreate;
  }
  get autoCreateOption() {
    return this.#shared.autoCreateOption;
  }
  #reach(): void {
    if (this.down) throw new BrokerError('BACKEND_UNAVAILABLE', `${this.name} is unreachable from this node`);
  }
  open = () => this.#shared.open();
  listVersions: KekBackend['listVersions'] = deadline => (this.#reach(), this.#shared.listVersions(deadline));
  createVersion: KekBackend['createVersion'] = deadline => (
    this.#reach(),
    this.#shared.createVersion(deadline)
  );
  wrap: KekBackend['wrap'] = request => (this.#reach(), this.#shared.wrap(request));
  unwrap: KekBackend['unwrap'] = request => (this.#reach(), this.#shared.unwrap(request));
  probe: KekBackend['probe'] = deadline => (this.#reach(), this.#shared.probe(deadline));
  close = () => Promise.resolve();
}

/** A shared store on `etcd` for one node, its local copy in `dir`. */
function sharedStore(etcd: Etcd, dir: string, node: string, prefix: string) {
  return etcdStateStore({
    client: createStoreClient({ endpoints: [etcd.url] }),
    endpoints: [etcd.url],
    name: 'failover',
    node,
    prefix,
    leaseTtlMs: 3000,
    promotionTimeoutMs: 20_000,
    convergenceWarnMs: 5000,
    version: 'test',
    localCopy: fileStateStore(join(dir, `${node}.json`)),
    logger: pino({ level: 'silent' }),
  });
}

describe('automatic writer switches across brokers sharing their state', { timeout: 180_000 }, () => {
  const step = orderedSteps();
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-cluster-fo-'));
  const hsm = new MemoryBackend({ name: 'hsm', versions: 1 });
  const vault = new MemoryBackend({ name: 'vault', versions: 1 });
  let etcd: Etcd;
  const nodes: { name: string; core: Core; links: Map<string, NodeLink> }[] = [];
  const node = (index: number) => nodes[index] as (typeof nodes)[number];
  const keyIds = () => nodes.map(entry => entry.core.broker.kms.status().keyId);
  /** A probe for pollFor of something held in memory. */
  const holds = (check: () => boolean) => () => Promise.resolve(check() ? true : undefined);

  before(async () => {
    etcd = await startEtcd(dir);
    for (const name of ['node-a', 'node-b']) {
      const links = new Map([hsm, vault].map(backend => [backend.name, new NodeLink(backend)]));
      const store = sharedStore(etcd, dir, name, '/kms-broker/failover/');
      const core = await startCore({
        backends: [...links.values()] as unknown as MemoryBackend[],
        wrap: 'first',
        store,
      });
      nodes.push({ name, core, links });
    }
  });

  after(async () => {
    for (const entry of nodes) await entry.core.close();
    await etcd?.stop();
  });

  let initial: string;
  step('both nodes start on the same key_id, writing with hsm', async () => {
    const [a, b] = keyIds();
    assert.equal(a, b);
    initial = a as string;
    assert.equal(node(0).core.broker.admin.status().writeVersions.hsm, '1');
    await pollFor(
      'both registered',
      holds(() => node(0).core.broker.admin.cluster().members.length === 2),
      { timeoutMs: 10_000, intervalMs: 50 },
    );
  });

  let onVault: string;
  step('hsm lost by node a: its switch to vault is confirmed by node b and advertised by both', async () => {
    const [before] = keyIds();
    (node(0).links.get('hsm') as NodeLink).down = true;
    await node(0).core.broker.probeNow();
    await pollFor(
      'both advertising a new key_id',
      holds(() => {
        const [a, b] = keyIds();
        return a !== before && a === b;
      }),
      { timeoutMs: 20_000, intervalMs: 50 },
    );
    onVault = keyIds()[0] as string;
    const sealed = await node(1).core.broker.kms.encrypt(Buffer.from('x'), { uid: 'b' });
    assert.equal(sealed.keyId, onVault);
    const opened = await node(0).core.broker.kms.decrypt(
      { ciphertext: sealed.ciphertext, keyId: sealed.keyId, annotations: sealed.annotations },
      { uid: 'a' },
    );
    assert.equal(opened.toString(), 'x');
  });

  step(
    'node b, which still reaches hsm, proposes it back in vain: node a refuses and no node flips',
    async () => {
      await node(1).core.broker.probeNow();
      await pollFor(
        "node b's proposal refused",
        holds(() =>
          node(1)
            .core.log.records()
            .some(
              record => record.msg === 'could not rebalance writes' && record.code === 'PROMOTION_REFUSED',
            ),
        ),
        { timeoutMs: 20_000, intervalMs: 50 },
      );
      assert.deepEqual(keyIds(), [onVault, onVault]);
    },
  );

  step('hsm back on node a: writes return to hsm on both, on a key_id never used before', async () => {
    (node(0).links.get('hsm') as NodeLink).down = false;
    await Promise.all(nodes.map(entry => entry.core.broker.probeNow()));
    await pollFor(
      'both back on hsm',
      holds(() => {
        const [a, b] = keyIds();
        return a !== onVault && a === b;
      }),
      { timeoutMs: 20_000, intervalMs: 50 },
    );
    assert.notEqual(keyIds()[0], initial, 'a new generation: the first key_id is never reused');
    assert.equal(node(1).core.broker.admin.status().writeVersions.hsm, '1');
    assert.equal(node(0).core.broker.admin.cluster().converged, true);
  });
});

describe('a broker starting on the shared state with a state file of its own', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-cluster-seed-'));
  let etcd: Etcd;
  before(async () => {
    etcd = await startEtcd(dir);
  });
  after(async () => {
    await etcd?.stop();
  });

  it('shares its state at its first start on an empty prefix, retired versions and all', async () => {
    const hsm = new MemoryBackend({ name: 'hsm', versions: 1 });
    const alone = await startCore({ backends: [hsm], store: fileStateStore(join(dir, 'node-a.json')) });
    const { keyId } = await alone.broker.admin.rotate('hsm');
    await alone.broker.admin.retire('hsm', '1', { force: true });
    await alone.close();
    const joined = await startCore({
      backends: [hsm],
      store: sharedStore(etcd, dir, 'node-a', '/kms-broker/seed/'),
    });
    try {
      const view = joined.broker.admin.cluster();
      assert.equal(view.keyId, keyId, 'etcd holds the state the file had, at once');
      const other = await startCore({
        backends: [hsm],
        store: sharedStore(etcd, dir, 'node-b', '/kms-broker/seed/'),
      });
      try {
        assert.equal(other.broker.kms.status().keyId, keyId);
        assert.equal(
          other.broker.admin.keys().hsm?.find(version => version.version === '1')?.role,
          'retired',
        );
      } finally {
        await other.close();
      }
    } finally {
      await joined.close();
    }
  });
  it('serves its local copy when the shared record in etcd is damaged, and refuses changes until it is repaired', async () => {
    const hsm = new MemoryBackend({ name: 'hsm', versions: 1 });
    const alone = await startCore({ backends: [hsm], store: fileStateStore(join(dir, 'node-x.json')) });
    const keyId = alone.broker.kms.status().keyId;
    await alone.close();
    const client = createStoreClient({ endpoints: [etcd.url] });
    try {
      await client.put('/kms-broker/damaged/state', Buffer.from('{"format": 1, "not": "a state"}'));
    } finally {
      client.close();
    }
    const joined = await startCore({
      backends: [hsm],
      store: sharedStore(etcd, dir, 'node-x', '/kms-broker/damaged/'),
    });
    try {
      assert.equal(joined.broker.kms.status().keyId, keyId, 'started from the local copy');
      await assert.rejects(joined.broker.admin.rotate('hsm'), { code: 'STATE_CONFLICT' });
      assert.equal(joined.broker.kms.status().keyId, keyId);
    } finally {
      await joined.close();
    }
  });
});
