// A restart during a one-backend outage must not become a no-plugin outage: a broker process
// with wrap: all over a real SoftHSM token and a real OpenBao starts while OpenBao is killed
// or sealed, serves Status, Encrypt and Decrypt through the HSM with the key_id it had, and
// takes OpenBao back (then heals the thin seed) once it returns, with no restart.
import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { startBrokerProcess } from '../helpers/broker-process.ts';
import {
  decryptOne,
  defer,
  encryptOne,
  startTransitServer,
  wrapsOf,
  writeFailoverConfig,
} from '../helpers/fault-injection.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const CLIENT_TIMEOUT_MS = 10000;

/** Polls Status until `accept` holds; bounded in count and time. */
async function statusUntil(
  client: KmsV2Client,
  accept: (status: { key_id: string; healthz: string }) => boolean,
  what: string,
): Promise<{ key_id: string; healthz: string }> {
  const endAt = Date.now() + 30000;
  for (let attempt = 0; attempt < 600 && Date.now() < endAt; attempt++) {
    const status = await client.status();
    if (accept(status)) return status;
    await new Promise(resolve => setTimeout(resolve, 50));
  }
  throw new Error(`${what}: not reached within 30 s`);
}

describe('start during a backend outage (wrap: all, SoftHSM + OpenBao)', () => {
  let hsmToken: SoftHsmToken;
  before(() => {
    hsmToken = createToken();
  });
  after(() => hsmToken.remove());

  for (const mode of ['killed', 'sealed'] as const) {
    it(`starts with OpenBao ${mode}, serves through the HSM with the same key_id, and takes OpenBao back`, async (t: TestContext) => {
      const server = await startTransitServer(t);
      const config = await writeFailoverConfig(t, hsmToken, server, { keyLabel: `kek-start-${mode}` });
      const env = { ...server.env, SOFTHSM2_CONF: hsmToken.conf };

      const first = await startBrokerProcess(config.path, env);
      const firstClient = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
      const before = await encryptOne(firstClient);
      assert.deepEqual(wrapsOf(before), ['hsm', 'vault']);
      firstClient.close();
      await first.stop();

      await (mode === 'killed' ? server.kill() : server.seal());
      const broker = await startBrokerProcess(config.path, env);
      defer(t, () => broker.stop());
      const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
      defer(t, () => client.close());

      const status = await client.status();
      assert.equal(status.key_id, before.keyId, 'a restart during an outage keeps key_id');
      assert.equal(status.healthz, 'ok');
      assert.ok(
        broker.logs.some(
          record => record.msg === 'backend unreachable at start; serving without it until it answers',
        ),
      );
      assert.deepEqual(await decryptOne(client, before), before.seed);
      const thin = await encryptOne(client);
      assert.deepEqual(wrapsOf(thin), ['hsm']);
      assert.equal(thin.keyId, before.keyId);

      await (mode === 'killed' ? server.restart() : server.unseal());
      await broker.waitForLog(record => record.msg === 'backend joined' && record.backend === 'vault');
      const healed = await statusUntil(
        client,
        current => current.key_id !== before.keyId,
        'a new key_id once the thin seed is healed',
      );
      const full = await encryptOne(client);
      assert.equal(full.keyId, healed.key_id);
      assert.deepEqual(wrapsOf(full), ['hsm', 'vault']);
      for (const sealed of [before, thin, full])
        assert.deepEqual(await decryptOne(client, sealed), sealed.seed);
      assert.equal(broker.child.exitCode, null, 'the broker never restarted');
    });
  }

  it('starts with the HSM token gone, serves through OpenBao, and takes the HSM back when the token returns', async (t: TestContext) => {
    const token = createToken();
    defer(t, () => token.remove());
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, token, server, { keyLabel: 'kek-start-hsm' });
    const env = { ...server.env, SOFTHSM2_CONF: token.conf };

    const first = await startBrokerProcess(config.path, env);
    const firstClient = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    const before = await encryptOne(firstClient);
    firstClient.close();
    await first.stop();

    const tokens = join(token.dir, 'tokens');
    renameSync(tokens, `${tokens}.away`);
    let restored = false;
    defer(t, () => (restored ? undefined : renameSync(`${tokens}.away`, tokens)));
    const broker = await startBrokerProcess(config.path, env);
    defer(t, () => broker.stop());
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());

    assert.equal((await client.status()).key_id, before.keyId);
    assert.equal((await client.status()).healthz, 'ok', 'OpenBao alone can take writes');
    assert.deepEqual(await decryptOne(client, before), before.seed);
    const thin = await encryptOne(client);
    assert.deepEqual(wrapsOf(thin), ['vault']);

    renameSync(`${tokens}.away`, tokens);
    restored = true;
    await broker.waitForLog(record => record.msg === 'backend joined' && record.backend === 'hsm');
    await statusUntil(client, current => current.key_id !== before.keyId, 'a new key_id once healed');
    const full = await encryptOne(client);
    assert.deepEqual(wrapsOf(full), ['hsm', 'vault']);
    for (const sealed of [before, thin, full])
      assert.deepEqual(await decryptOne(client, sealed), sealed.seed);
  });
});
