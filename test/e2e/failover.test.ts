// `wrap: all` over SoftHSM and OpenBao under a real kube-apiserver: with one key service gone,
// a restarted apiserver (which must Decrypt every stored DEK seed again) starts and reads every
// Secret. The broker runs in this process on the real backends, with the HSM behind a fault
// switch: SoftHSM cannot be unplugged under a running process, OpenBao can really be stopped.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it, type TestContext } from 'node:test';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import {
  HSM_WRAP,
  startFailoverApp,
  startTransitServer,
  VAULT_WRAP,
  writeFailoverConfig,
  type FailoverApp,
} from '../helpers/fault-injection.ts';
import { createSecret, secretValue, startCluster, type Cluster } from '../helpers/kube-cluster.ts';
import { identity, kms, type Provider } from '../helpers/kube-encryption.ts';
import { decodeStored } from '../helpers/kube-etcd.ts';
import { createToken } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import type { SealableBaoServer } from '../helpers/openbao.ts';

const PROVIDER = 'kms-broker';
const SECRETS = 5;

// One token for the file: the PKCS#11 module is loaded once per process, with this config.
const hsmToken = createToken('e2e-failover');
process.env.SOFTHSM2_CONF = hsmToken.conf;
process.once('exit', () => hsmToken.remove());

interface Setup {
  readonly cluster: Cluster;
  readonly broker: FailoverApp;
  readonly bao: SealableBaoServer;
  /** Secret name → value, all written while both backends were up. */
  readonly written: ReadonlyMap<string, string>;
  /** The broker's provider, as `kms-broker encryption-config` printed it. */
  readonly kmsProvider: Provider;
}

/**
 * Which backends wrapped a stored Secret's DEK seed: the broker envelope in the ciphertext
 * names the first, each further wrap travels as an annotation.
 */
async function wrappersOf(cluster: Cluster, name: string): Promise<string[]> {
  const raw = (await cluster.etcd.secrets()).get(`default/${name}`);
  assert.ok(raw !== undefined, `default/${name} is not in etcd`);
  const stored = decodeStored(raw);
  assert.ok(stored.kind === 'kms-v2', `default/${name} is stored as ${stored.kind}`);
  const annotated: Record<string, string> = { [HSM_WRAP]: 'hsm', [VAULT_WRAP]: 'vault' };
  return [
    decodeEnvelope(stored.encryptedDekSource).header.backend,
    ...stored.annotationKeys.map(key => annotated[key] ?? key),
  ];
}

/** OpenBao, a wrap-all broker, a cluster on it, and Secrets wrapped by both backends. */
async function setUp(t: TestContext, keyLabel: string): Promise<Setup> {
  const bao = await startTransitServer(t);
  const config = await writeFailoverConfig(t, hsmToken, bao, { wrap: 'all', keyLabel });
  const broker = await startFailoverApp(t, config.path);
  const cluster = await startCluster();
  defer(t, () => cluster.stop());
  const kmsProvider = kms(PROVIDER, config.path);
  await cluster.startApiserver({ providers: [kmsProvider, identity] });

  const written = new Map<string, string>();
  for (let i = 0; i < SECRETS; i++) {
    const value = randomBytes(12).toString('hex');
    await createSecret(cluster, `s${i}`, value);
    written.set(`s${i}`, value);
  }
  for (const name of written.keys())
    assert.deepEqual(await wrappersOf(cluster, name), ['hsm', 'vault'], name);
  return { cluster, broker, bao, written, kmsProvider };
}

/** Restarts the apiserver (an empty DEK cache) and reads every Secret back with kubectl. */
async function restartAndReadAll(setup: Setup): Promise<void> {
  const readyMs = await setup.cluster.startApiserver({
    providers: [setup.kmsProvider, identity],
  });
  process.stdout.write(`# kube-apiserver ready again in ${readyMs} ms\n`);
  for (const [name, value] of setup.written)
    assert.equal(await secretValue(setup.cluster, 'default', name, 'k'), value);
  const listed = JSON.parse(
    await setup.cluster.kubectl(['get', 'secrets', '-n', 'default', '-o', 'json']),
  ) as {
    items: unknown[];
  };
  assert.equal(listed.items.length, setup.written.size);
}

it('with wrap: all and OpenBao stopped, a restarted apiserver starts and reads every Secret', async t => {
  const setup = await setUp(t, 'kek-bao-down');
  await setup.bao.stop();

  await restartAndReadAll(setup);
  // Writes go on with the HSM alone: the envelope is under-replicated, not refused.
  await createSecret(setup.cluster, 'during', 'v');
  assert.deepEqual(await wrappersOf(setup.cluster, 'during'), ['hsm']);
});

it('with wrap: all and the HSM failing, a restarted apiserver starts and reads every Secret through OpenBao', async t => {
  const setup = await setUp(t, 'kek-hsm-down');
  setup.broker.hsm.fail();

  await restartAndReadAll(setup);
  assert.ok(
    (setup.broker.hsm.injected.unwrap ?? 0) + (setup.broker.hsm.injected.probe ?? 0) > 0,
    'the HSM was never asked',
  );
  await createSecret(setup.cluster, 'during', 'v');
  assert.deepEqual(await wrappersOf(setup.cluster, 'during'), ['vault']);
});
