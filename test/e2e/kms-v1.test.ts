// The legacy path: a kms provider with `apiVersion: v1` (KMS v1beta1 on the broker's socket).
// Kubernetes 1.37 still serves it, but only behind the KMSv1 feature gate (deprecated in 1.28,
// off by default since 1.29); without the gate the apiserver refuses the configuration.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { scanSecrets } from '../helpers/cli-run.ts';
import { createSecret, secretValue } from '../helpers/kube-cluster.ts';
import { identity, kms } from '../helpers/kube-encryption.ts';
import { decodeStored } from '../helpers/kube-etcd.ts';
import { startBrokerCluster, type BrokerCluster } from '../helpers/kube-setup.ts';

const PROVIDER = 'kms-broker-v1';

describe('kube-apiserver encrypting Secrets through kms-broker (KMS v1beta1)', () => {
  let setup: BrokerCluster | undefined;

  before(async () => {
    setup = await startBrokerCluster('e2e-v1');
  });

  after(() => setup?.stop());

  const on = () => {
    assert.ok(setup !== undefined, 'the cluster did not start');
    return { cluster: setup.cluster, providers: [kms(PROVIDER, setup.config.path, 'v1'), identity] };
  };

  it('is refused without the KMSv1 feature gate', async () => {
    const { cluster, providers } = on();
    await cluster.launchApiserver({ providers });
    await cluster.waitForApiserverLog(/KMSv1 is deprecated.*Set --feature-gates=KMSv1=true/);
    // It stays up, stuck before it serves anything (no Secret could be stored).
    const readyz = await cluster.get('/readyz').then(
      answer => answer.status,
      (error: Error) => error.message,
    );
    assert.notEqual(readyz, 200);
  });

  it('with KMSv1=true, stores a Secret as k8s:enc:kms:v1:<provider>: with no plaintext, and reads it back', async () => {
    const { cluster, providers } = on();
    await cluster.startApiserver({ providers, featureGates: 'KMSv1=true' });
    const marker = randomBytes(16).toString('hex');
    await createSecret(cluster, 's1', marker);

    const raw = (await cluster.etcd.secrets()).get('default/s1');
    assert.ok(raw !== undefined, 'default/s1 is not in etcd');
    assert.ok(
      raw.toString('latin1').startsWith(`k8s:enc:kms:v1:${PROVIDER}:`),
      raw.subarray(0, 40).toString('latin1'),
    );
    assert.deepEqual(decodeStored(raw), { kind: 'kms-v1', provider: PROVIDER });
    assert.equal(raw.indexOf(marker), -1, 'the plaintext value is in etcd');
    assert.equal(await secretValue(cluster, 'default', 's1', 'k'), marker);
    // kms-broker usage reads the KMS v1 value down to the broker's wrap set.
    const scan = await scanSecrets(cluster.etcd.url);
    assert.deepEqual(scan.formats, { 'kms-v1': 1 });
    assert.deepEqual(scan.wrapSets, [
      { wraps: [{ backend: 'hsm', version: '1' }], objects: 1, resources: { secrets: 1 } },
    ]);
  });
});
