// aes-gcm-hsm-iv against tokens that draw the GCM IV themselves, in both documented ways,
// played by the test shim over SoftHSM: the IV written into the caller's IV field (PKCS#11
// v3.0, AWS CloudHSM) and the IV appended to the output (Thales Luna in FIPS mode: 16 bytes,
// or 12 from firmware 7.9.3). Each shim mode runs as its own module (a copy of the shim at
// its own path, initialized with its own setting), each wrap stores the token's IV, and a
// token that takes the host's IV is refused rather than given zeros.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync } from 'node:fs';
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

const root = new URL('../..', import.meta.url).pathname;
const SHIM = join(root, '.cache/pkcs11-shim/libkms-broker-shim.so');
const HEADER = Buffer.from('envelope header');
const deadline = () => startDeadline(10_000);

describe('aes-gcm-hsm-iv on tokens that draw the IV', () => {
  let token: SoftHsmToken;
  const log = memoryLog();
  const backends: Pkcs11Backend[] = [];

  before(() => {
    execFileSync('bash', [join(root, 'scripts/build-pkcs11-shim.sh')], { stdio: 'pipe' });
    token = createToken();
    process.env.SOFTHSM2_CONF = token.conf;
  });

  after(async () => {
    for (const backend of backends) await backend.close();
    delete process.env.KMS_BROKER_SHIM_GCM_IV;
    token.remove();
  });

  /** A backend on its own copy of the shim (`name`), initialized with `mode`; SoftHSM itself without one. */
  async function backendOn(mode: string | undefined, settings: Record<string, unknown>, name = mode) {
    const module = mode === undefined ? undefined : join(token.dir, `lib${name}.so`);
    if (module !== undefined) copyFileSync(SHIM, module);
    if (mode === undefined) delete process.env.KMS_BROKER_SHIM_GCM_IV;
    else process.env.KMS_BROKER_SHIM_GCM_IV = mode;
    const config = validateConfig({
      socket: '/tmp/unused.sock',
      state: { path: '/tmp/unused.json' },
      backends: [
        pkcs11Backend(token, {
          ...(module && { module }),
          keyLabel: `kek-${name ?? 'softhsm'}`,
          ...settings,
        }),
      ],
      failover: { order: ['hsm'] },
    }).backends[0] as Pkcs11BackendConfig;
    const backend = new Pkcs11Backend(config, { readSecret, logger: createLogger('info', log.stream) });
    backends.push(backend);
    // The shim reads its setting when the module is initialized, which open does.
    await backend.open();
    const version = (await backend.createVersion(deadline())).version;
    const wrap = (plaintext: Buffer) =>
      backend.wrap({ plaintext, keyVersion: version, aad: HEADER, deadline: deadline() });
    const unwrap = (wrapped: Buffer, aad = HEADER) =>
      backend.unwrap({
        wrapped,
        keyVersion: version,
        mechanism: backend.mechanism,
        aad,
        deadline: deadline(),
      });
    return { backend, wrap, unwrap };
  }

  for (const { mode, ivBytes, how } of [
    { mode: 'token', ivBytes: 12, how: 'written into the IV field' },
    { mode: 'appended', ivBytes: 16, how: 'appended, 16 bytes' },
    { mode: 'appended96', ivBytes: 12, how: 'appended, 12 bytes' },
  ]) {
    it(`stores the IV the token drew (${how}), reads it back, refuses tampering`, async () => {
      const { wrap, unwrap } = await backendOn(mode, { mechanism: 'aes-gcm-hsm-iv' });
      const seeds = [randomBytes(32), randomBytes(32), randomBytes(32)];
      const wraps: Buffer[] = [];
      for (const seed of seeds) wraps.push(await wrap(seed));
      const ivs = wraps.map(wrapped => wrapped.subarray(1, 1 + ivBytes).toString('hex'));
      for (const [index, wrapped] of wraps.entries()) {
        assert.equal(wrapped[0], ivBytes, 'the stored IV length');
        assert.equal(wrapped.length, 1 + ivBytes + 32 + 16);
        assert.deepEqual(await unwrap(wrapped), seeds[index]);
      }
      assert.equal(new Set(ivs).size, ivs.length, 'a fresh IV per wrap');
      assert.ok(!ivs.includes('00'.repeat(ivBytes)));

      const first = wraps[0] as Buffer;
      for (const at of [1, first.length - 1]) {
        const tampered = Buffer.from(first);
        tampered[at] = (tampered[at] as number) ^ 1;
        await assert.rejects(unwrap(tampered), { code: 'INVALID_CIPHERTEXT' });
      }
      const badLength = Buffer.from(first);
      badLength[0] = 13;
      await assert.rejects(unwrap(badLength), { code: 'INVALID_CIPHERTEXT', message: /malformed/ });
      await assert.rejects(unwrap(first, Buffer.from('another header')), { code: 'INVALID_CIPHERTEXT' });
    });
  }

  it('refuses the host-IV mechanism on a token that draws the IV, naming the cause', async () => {
    const { wrap } = await backendOn('token', { mechanism: 'aes-gcm' }, 'token-host');
    await assert.rejects(wrap(randomBytes(32)), {
      code: 'BACKEND_UNAVAILABLE',
      causeName: 'CKR_MECHANISM_PARAM_INVALID',
    });
  });

  it('refuses aes-gcm-hsm-iv on a token that takes the host IV, and stores nothing made with zeros', async () => {
    const { wrap } = await backendOn(undefined, { mechanism: 'aes-gcm-hsm-iv' });
    await assert.rejects(wrap(randomBytes(32)), {
      code: 'BACKEND_UNAVAILABLE',
      causeName: 'GCM_IV_NOT_GENERATED',
      message:
        /the token drew no GCM IV \(in-params: .*; appended: .*\); a token that takes the IV from the host needs mechanism: aes-gcm/,
    });
  });
});
