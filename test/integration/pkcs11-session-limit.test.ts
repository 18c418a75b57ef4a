// The PKCS#11 backend on a token that caps and reclaims sessions, as a YubiHSM 2 does (16
// sessions for every application, idle ones reclaimed after 30 s): the test shim over SoftHSM
// (test/pkcs11-shim) states a cap of 4 and reclaims a session once 40 calls went to others. The health probe
// keeps sessions warm; these tests call it where the broker's timer would.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Pkcs11Backend } from '../../src/backends/pkcs11/pkcs11-backend.ts';
import type { Pkcs11BackendConfig } from '../../src/backends/pkcs11/pkcs11-schema.ts';
import { validateConfig } from '../../src/config/load.ts';
import { startDeadline } from '../../src/deadline.ts';
import { createLogger } from '../../src/log.ts';
import { readSecret } from '../../src/secrets.ts';
import { pkcs11Backend } from '../helpers/config.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const SHIM = join(new URL('../..', import.meta.url).pathname, '.cache/pkcs11-shim/libkms-broker-shim.so');
const RECOVERING = 'recovering HSM connection';
const deadline = () => startDeadline(10_000);

describe('PKCS#11 backend on a token that caps and reclaims sessions (shim)', () => {
  let token: SoftHsmToken;
  let backend: Pkcs11Backend;
  let version: string;
  const log = memoryLog();

  before(async () => {
    token = createToken();
    // The shim reads its rules, and SoftHSM its config, when the module is initialized.
    Object.assign(process.env, {
      SOFTHSM2_CONF: token.conf,
      KMS_BROKER_SHIM_MAX_SESSIONS: '4',
      KMS_BROKER_SHIM_IDLE_CALLS: '40',
    });
    const config = validateConfig({
      socket: '/tmp/unused.sock',
      state: { path: '/tmp/unused.json' },
      backends: [pkcs11Backend(token, { module: SHIM, sessions: 16 })],
      failover: { order: ['hsm'] },
    }).backends[0] as Pkcs11BackendConfig;
    backend = new Pkcs11Backend(config, { readSecret, logger: createLogger('info', log.stream) });
    await backend.open();
    version = (await backend.createVersion(deadline())).version;
  });

  after(async () => {
    await backend.close();
    delete process.env.KMS_BROKER_SHIM_MAX_SESSIONS;
    delete process.env.KMS_BROKER_SHIM_IDLE_CALLS;
    token.remove();
  });

  const wrap = () =>
    backend.wrap({
      plaintext: randomBytes(32),
      keyVersion: version,
      aad: Buffer.from('h'),
      deadline: deadline(),
    });
  const recoveries = () => log.records().filter(line => line.msg === RECOVERING).length;

  it('sizes the pool under the token cap and says so, instead of the configured 16', async () => {
    const lowered = log.records().find(line => line.tokenCap !== undefined);
    assert.ok(lowered, 'a warning names the token cap');
    assert.deepEqual(
      [lowered.level, lowered.configured, lowered.tokenCap, lowered.sessions],
      ['warn', 16, 4, 2],
    );
    // Batches of 8 at once: with 16 sessions the token would refuse the 4th (CKR_SESSION_COUNT).
    for (let batch = 0; batch < 3; batch++) {
      const wrapped = await Promise.all(Array.from({ length: 8 }, wrap));
      assert.equal(wrapped.length, 8);
      await backend.probe(deadline());
    }
    assert.equal(recoveries(), 0, log.text());
  });

  it('keeps idle sessions from being reclaimed while the health probe runs', async () => {
    // A wrap is a handful of calls; probing after each keeps every session well under 40 calls
    // idle, as a probe interval under 30 s does on a YubiHSM 2.
    await backend.probe(deadline());
    for (let round = 0; round < 20; round++) {
      await wrap();
      await backend.probe(deadline());
    }
    // Both pooled sessions in use at once: the one left idle must still be open.
    await Promise.all([wrap(), wrap()]);
    assert.equal(recoveries(), 0, log.text());
  });

  it('without the probe, a reclaimed session costs a recovery, and the call still succeeds', async () => {
    // 40 wraps, at least two calls each, all on one session: the other two are reclaimed.
    for (let round = 0; round < 40; round++) await wrap();
    const results = await Promise.all([wrap(), wrap()]);
    assert.equal(results.length, 2);
    assert.ok(recoveries() >= 1, 'the reclaimed session was noticed and recovered from');
  });
});
