// Status stays honest: when the HSM cannot be used, healthz names the backend and the
// reason and KMS calls fail with UNAVAILABLE; when it comes back, the broker recovers
// without a restart. In-process broker on a real SoftHSM token and a real socket.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import pkcs11js from 'pkcs11js';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { startApp, type RunningApp } from '../../src/app.ts';
import { loadModule, type LoadedModule } from '../../src/backends/pkcs11/module-cache.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { createLogger } from '../../src/log.ts';
import { writeConfig } from '../helpers/config.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { until } from '../helpers/fault-injection.ts';
import { RECOVERY_BACKOFF_MAX_MS } from '../../src/backends/pkcs11/recovery-schedule.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import { createToken, SOFTHSM_MODULE, type SoftHsmToken } from '../helpers/softhsm.ts';

describe('health as Status reports it', () => {
  let token: SoftHsmToken;
  let app: RunningApp;
  let client: KmsV2Client;
  let library: LoadedModule;
  const log = memoryLog();

  before(async () => {
    token = createToken();
    process.env.SOFTHSM2_CONF = token.conf;
    // Probes are driven by the test (probeAll), not by the timer.
    const config = writeConfig(token, { health: { probeIntervalMs: 3600000 } });
    const { config: loaded, readFile } = loadConfigFile(config.path);
    app = await startApp(loaded, { logger: createLogger('info', log.stream), readFile });
    client = createKmsV2Client(config.socket);
    // A second user of the same library: the broker then must not finalize it itself.
    library = loadModule(SOFTHSM_MODULE);
  });

  after(async () => {
    client.close();
    library.release();
    await app.shutdown();
    token.remove();
  });

  it('reports ok while the HSM works', async () => {
    await app.broker.probeNow();
    assert.equal((await client.status()).healthz, 'ok');
  });

  it('names the failing backend and the PKCS#11 error when the library is lost, and fails calls as UNAVAILABLE', async () => {
    const before = await client.encrypt(randomBytes(32));
    library.module.finalize();
    await app.broker.probeNow();
    const status = await client.status();
    assert.equal(status.healthz, 'unhealthy backends: hsm (CKR_CRYPTOKI_NOT_INITIALIZED)');
    assert.equal(status.key_id, before.key_id, 'key_id does not change with momentary health');
    await expectGrpcError(
      client.encrypt(randomBytes(32)),
      GrpcStatus.UNAVAILABLE,
      /BACKEND_UNAVAILABLE: backend hsm/,
    );
    await expectGrpcError(
      client.decrypt({ ciphertext: before.ciphertext, key_id: before.key_id }),
      GrpcStatus.UNAVAILABLE,
    );
    assert.ok(!log.text().includes(readFileSync(token.pinFile, 'utf8').trim()), 'the PIN is never logged');
  });

  it('recovers without a restart once the library is back', async () => {
    library.module.initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    // Failed recovery attempts are spaced by a backoff: the probe after it has passed mends it.
    await until(
      async () => {
        await app.broker.probeNow();
        return (await client.status()).healthz;
      },
      healthz => healthz === 'ok',
      'healthz ok after the library is back',
      RECOVERY_BACKOFF_MAX_MS + 1000,
    );
    const seed = randomBytes(32);
    const encrypted = await client.encrypt(seed);
    assert.deepEqual(
      (await client.decrypt({ ciphertext: encrypted.ciphertext, key_id: encrypted.key_id })).plaintext,
      seed,
    );
    assert.ok(log.records().some(record => record.msg === 'backend recovered' && record.backend === 'hsm'));
  });
});
