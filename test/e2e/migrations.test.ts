// Moving a real cluster's Secrets onto kms-broker and off it again, each step as an operator
// runs it: change the EncryptionConfiguration (the new write provider first, the old one still
// listed so old data reads), restart the apiserver, rewrite every Secret, check etcd, then drop
// the old provider. The steps run in order on one cluster: each starts where the last ended.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe } from 'node:test';
import { createSecret, rewriteAllSecrets, secretValue } from '../helpers/kube-cluster.ts';
import { scanSecrets } from '../helpers/cli-run.ts';
import { aescbc, identity, kms, type Provider } from '../helpers/kube-encryption.ts';
import { decodeStored, type StoredValue } from '../helpers/kube-etcd.ts';
import { startBrokerCluster, type BrokerCluster } from '../helpers/kube-setup.ts';
import { orderedSteps } from '../helpers/ordered-steps.ts';

describe('migrating Secrets between identity, aescbc and kms-broker', () => {
  let setup: BrokerCluster | undefined;
  /** Every Secret the tests wrote: name → value. */
  const written = new Map<string, string>();

  before(async () => {
    setup = await startBrokerCluster('e2e-migrate');
    await setup.cluster.startApiserver({});
  });

  after(() => setup?.stop());

  const on = () => {
    assert.ok(setup !== undefined, 'the cluster did not start');
    return { cluster: setup.cluster, kmsBroker: kms('kms-broker', setup.config.path) };
  };

  async function createSecrets(prefix: string, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const value = randomBytes(12).toString('hex');
      await createSecret(on().cluster, `${prefix}${i}`, value);
      written.set(`${prefix}${i}`, value);
    }
  }

  /** How every Secret in etcd is stored, as "kind" or "kind:provider" (e.g. kms-v2:kms-broker). */
  async function storedAs(): Promise<Map<string, string>> {
    const label = (value: StoredValue) =>
      value.kind === 'kms-v2' || value.kind === 'kms-v1'
        ? `${value.kind}:${value.provider}`
        : value.kind === 'aescbc'
          ? `aescbc:${value.key}`
          : value.kind;
    const found = new Map<string, string>();
    for (const [name, raw] of await on().cluster.etcd.secrets()) found.set(name, label(decodeStored(raw)));
    return found;
  }

  async function assertAllStoredAs(expected: string): Promise<void> {
    const stored = await storedAs();
    assert.equal(
      stored.size,
      written.size,
      `etcd holds ${stored.size} secrets, the tests wrote ${written.size}`,
    );
    for (const [name, how] of stored)
      assert.equal(how, expected, `default/${name.replace(/^default\//, '')}`);
  }

  async function assertAllRead(): Promise<void> {
    for (const [name, value] of written)
      assert.equal(await secretValue(on().cluster, 'default', name, 'k'), value, name);
  }

  /**
   * The operator's migration: the new provider first and the old one still listed (so old data
   * reads), a restart, a rewrite of every Secret, a look at etcd; then the old provider goes.
   */
  async function migrate(to: Provider, from: Provider, expected: string): Promise<void> {
    const { cluster } = on();
    await cluster.startApiserver({ providers: [to, from] });
    await rewriteAllSecrets(cluster);
    await assertAllStoredAs(expected);
    await cluster.startApiserver({ providers: [to] });
    await assertAllRead();
  }

  const step = orderedSteps();

  step('identity → kms: plaintext Secrets are rewritten encrypted by the broker', async () => {
    await createSecrets('plain', 3);
    await assertAllStoredAs('plain');

    await migrate(on().kmsBroker, identity, 'kms-v2:kms-broker');
  });

  step('kms → identity: disabling encryption rewrites every Secret as plaintext', async () => {
    await createSecrets('encrypted', 2);
    await assertAllStoredAs('kms-v2:kms-broker');

    await migrate(identity, on().kmsBroker, 'plain');
  });

  step('aescbc → kms: Secrets under a local AES-CBC key move to the broker', async () => {
    const local = aescbc('key1');
    await migrate(local, identity, 'aescbc:key1');
    await createSecrets('cbc', 2);
    await assertAllStoredAs('aescbc:key1');
    // kms-broker usage tells the same from etcd: every Secret under the local key, none under the broker.
    const before = await scanSecrets(on().cluster.etcd.url);
    assert.deepEqual(before.formats, { aescbc: written.size });
    assert.deepEqual(before.wrapSets, []);

    await migrate(on().kmsBroker, local, 'kms-v2:kms-broker');
    const after = await scanSecrets(on().cluster.etcd.url);
    assert.deepEqual(after.formats, { 'kms-v2': written.size });
    assert.deepEqual(
      after.wrapSets.map(set => [set.wraps, set.objects]),
      [[[{ backend: 'hsm', version: '1' }], written.size]],
    );
  });
});
