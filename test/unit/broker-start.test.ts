// The broker core starting while a backend is down: it serves with what it reaches, from the
// stored state, and lets the missing backend join when it answers; key_id follows the rules
// of the design (the configured set, not momentary health).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { BrokerError } from '../../src/errors.ts';
import { memoryStateStore, startCore, until, withCore } from '../helpers/core-broker.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { brokerError } from './expect-error.ts';

const uid = 'unit';

function pair(): [MemoryBackend, MemoryBackend] {
  return [new MemoryBackend({ name: 'hsm', versions: 1 }), new MemoryBackend({ name: 'vault', versions: 1 })];
}

describe('broker core: start while a backend is down', () => {
  it('with wrap: all, serves from the stored state with the same key_id, then heals when the backend returns', async () => {
    const store = memoryStateStore();
    const [hsm, vault] = pair();
    const first = await startCore({ backends: [hsm, vault], store });
    const keyId = first.broker.kms.status().keyId;
    const before = await first.broker.kms.encrypt(randomBytes(32), { uid });
    await first.close();

    vault.failAll();
    await withCore({ backends: [hsm, vault], store }, async core => {
      assert.equal(core.broker.kms.status().keyId, keyId, 'a restart during an outage keeps key_id');
      assert.equal(core.broker.kms.status().healthz, 'ok', 'one writer alive is enough');
      assert.ok(
        core.log
          .records()
          .some(record => record.msg === 'backend unreachable at start; serving without it until it answers'),
      );
      assert.equal((await core.broker.kms.decrypt(before, { uid })).length, 32);
      const thin = await core.broker.kms.encrypt(randomBytes(32), { uid });
      assert.deepEqual(thin.annotations, {});
      assert.deepEqual(core.broker.admin.status().degraded, ['vault']);

      vault.heal();
      await core.broker.probeNow();
      assert.ok(
        core.log.records().some(record => record.msg === 'backend joined' && record.backend === 'vault'),
      );
      await core.broker.probeNow();
      const healed = await until(
        () => core.broker.kms.status().keyId,
        current => current !== keyId,
        'a new key_id once the thin seed is healed',
      );
      const full = await core.broker.kms.encrypt(randomBytes(32), { uid });
      assert.equal(full.keyId, healed);
      assert.equal(Object.keys(full.annotations).length, 1);
    });
  });

  it('on a first start with a backend down, writes with the others and takes the backend in when it answers', async () => {
    const store = memoryStateStore();
    const [hsm, vault] = pair();
    vault.failAll();
    await withCore({ backends: [hsm, vault], store }, async core => {
      const alone = core.broker.kms.status().keyId;
      assert.deepEqual(core.broker.admin.status().writeVersions, { hsm: '1' });
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      assert.equal(sealed.keyId, alone);
      vault.heal();
      await core.broker.probeNow();
      assert.deepEqual(core.broker.admin.status().writeVersions, { hsm: '1', vault: '1' });
      assert.notEqual(core.broker.kms.status().keyId, alone, 'the key set now has both backends');
      assert.deepEqual(Object.keys(store.current()?.backends ?? {}), ['hsm', 'vault']);
    });
  });

  it('keeps a backend out while it answers with keys that are not the ones the state records', async () => {
    const store = memoryStateStore();
    const [hsm, vault] = pair();
    await (await startCore({ backends: [hsm, vault], store })).close();
    const impostor = new MemoryBackend({ name: 'vault', versions: 1 }); // another key as version 1
    impostor.failAll();
    await withCore({ backends: [hsm, impostor], store }, async core => {
      impostor.heal();
      await core.broker.probeNow();
      const view = core.broker.admin.backends().find(backend => backend.name === 'vault');
      assert.equal(view?.healthy, false);
      assert.equal(view?.reason, 'STATE_MISMATCH');
      assert.equal(core.broker.kms.status().healthz, 'ok');
    });
  });

  it('does not start when no backend answers, nor when any refuses the PIN', async () => {
    const [hsm, vault] = pair();
    hsm.failAll();
    vault.failAll();
    await assert.rejects(startCore({ backends: [hsm, vault] }), brokerError('BACKEND_UNAVAILABLE'));
    hsm.heal();
    vault.heal();
    vault.fail('open', new BrokerError('HSM_LOGIN_FAILED', 'the token refused the PIN'));
    const opens = vault.calls.open;
    await assert.rejects(startCore({ backends: [hsm, vault] }), brokerError('HSM_LOGIN_FAILED'));
    assert.equal(vault.calls.open, opens + 1, 'a refused PIN is never tried again');
  });
});
