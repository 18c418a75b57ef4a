// A real kube-apiserver on a real etcd, encrypting Secrets through a kms-broker process over
// KMS v2, and kubectl as the operator. Every check of what is stored reads etcd directly.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { adminClient, type AdminClient } from '../helpers/admin-http.ts';
import { createSecret, rewriteAllSecrets, secretValue } from '../helpers/kube-cluster.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { decodeStored, type StoredValue } from '../helpers/kube-etcd.ts';
import { pollFor } from '../helpers/kube-process.ts';
import { startBrokerCluster, type BrokerCluster } from '../helpers/kube-setup.ts';

const PROVIDER = 'kms-broker';

describe('kube-apiserver encrypting Secrets through kms-broker (KMS v2)', () => {
  let setup: BrokerCluster | undefined;
  let admin: AdminClient;

  before(async () => {
    setup = await startBrokerCluster('e2e');
    admin = adminClient(setup.config.adminSocket);
    const readyMs = await setup.cluster.startApiserver({
      providers: [kms(PROVIDER, setup.config.path), identity],
    });
    process.stdout.write(`# kube-apiserver ready in ${readyMs} ms\n`);
  });

  after(() => setup?.stop());

  const on = () => {
    assert.ok(setup !== undefined, 'the cluster did not start');
    return setup;
  };

  async function brokerKeyId(): Promise<string> {
    const status = await admin.get('/v1/status', on().config.viewerToken);
    assert.equal(status.status, 200, status.text);
    return (status.body as { keyId: string }).keyId;
  }

  async function stored(name: string, namespace = 'default'): Promise<{ raw: Buffer; value: StoredValue }> {
    const raw = (await on().cluster.etcd.secrets()).get(`${namespace}/${name}`);
    assert.ok(raw !== undefined, `secret ${namespace}/${name} is not in etcd`);
    return { raw, value: decodeStored(raw) };
  }

  /** The broker's count of Encrypt calls it answered: the apiserver re-seeds with one. */
  async function encryptsAnswered(): Promise<number> {
    const metrics = await admin.get('/metrics', on().config.viewerToken);
    const line = /^kms_broker_kms_requests_total\{method="v2\.Encrypt",outcome="ok"\} (\d+)$/m.exec(
      metrics.text,
    );
    return Number(line?.[1] ?? 0);
  }

  const marker = randomBytes(16).toString('hex');

  it('stores a Secret made with kubectl as k8s:enc:kms:v2:<provider>: under the broker key_id, with no plaintext, and reads it back', async () => {
    const { cluster } = on();
    await createSecret(cluster, 's1', marker);

    const { raw, value } = await stored('s1');
    assert.ok(
      raw.toString('latin1').startsWith(`k8s:enc:kms:v2:${PROVIDER}:`),
      raw.subarray(0, 40).toString('latin1'),
    );
    assert.equal(raw.indexOf(marker), -1, 'the plaintext value is in etcd');
    assert.equal(raw.indexOf(Buffer.from(marker).toString('base64')), -1, 'the base64 value is in etcd');
    assert.equal(value.kind, 'kms-v2');
    assert.equal(value.keyId, await brokerKeyId());
    assert.equal(await secretValue(cluster, 'default', 's1', 'k'), marker);
  });

  it('after a rotation and the apiserver Status probe, new Secrets carry the new key_id, old ones read, and a rewrite leaves none under the old one', async () => {
    const { cluster, config } = on();
    const oldKeyId = await brokerKeyId();
    const encryptsBefore = await encryptsAnswered();

    const rotated = await admin.post('/v1/backends/hsm/rotate', config.adminToken);
    assert.equal(rotated.status, 200, rotated.text);
    const newKeyId = (rotated.body as { keyId: string }).keyId;
    assert.notEqual(newKeyId, oldKeyId);

    // The apiserver's Status poll runs every minute (a constant in 1.37, no flag). The same
    // probe serves /healthz/kms-providers, cached 20 s after a success: asking it every second
    // makes the apiserver run its own Status, see the new key_id and re-seed with one Encrypt
    // within 20 s instead of 60 s.
    const rotatedAt = Date.now();
    await pollFor(
      'the apiserver re-seeding after the rotation',
      async () => {
        const health = await cluster.get('/healthz/kms-providers');
        assert.equal(health.status, 200, health.text);
        return (await encryptsAnswered()) > encryptsBefore ? true : undefined;
      },
      { timeoutMs: 45_000, intervalMs: 1000 },
    );
    process.stdout.write(`# the apiserver re-seeded ${Date.now() - rotatedAt} ms after the rotation\n`);

    await createSecret(cluster, 's2', `${marker}-2`);
    assert.deepEqual(
      [(await stored('s2')).value, (await stored('s1')).value].map(
        value => value.kind === 'kms-v2' && value.keyId,
      ),
      [newKeyId, oldKeyId],
    );
    assert.equal(await secretValue(cluster, 'default', 's1', 'k'), marker);

    await rewriteAllSecrets(cluster);
    const all = await cluster.etcd.secrets();
    assert.ok(all.size >= 2, `only ${all.size} secrets in etcd`);
    for (const [name, raw] of all) {
      const value = decodeStored(raw);
      assert.ok(value.kind === 'kms-v2' && value.keyId === newKeyId, `${name} is not under the new key_id`);
    }
    assert.equal(await secretValue(cluster, 'default', 's1', 'k'), marker);
    assert.equal(await secretValue(cluster, 'default', 's2', 'k'), `${marker}-2`);
  });
});
