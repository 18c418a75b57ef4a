// The Azure Key Vault backend through the broker's socket, against the in-process Key Vault
// and Entra ID emulator (test/helpers/azure-keyvault-emulator.ts; Lowkey Vault's app jar is
// not served by this machine's Maven mirror): round trips with one vault call per wrap and
// unwrap, pinned versions, rotation through the admin API and in the vault, throttling and
// outages within the deadline, credentials and permissions, and `wrap: all` with SoftHSM
// while the vault goes away and comes back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { AzureKeyVaultBackend } from '../../src/backends/azure-keyvault/azure-keyvault-backend.ts';
import { WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { decodeEnvelope, headerAad } from '../../src/broker/envelope.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { AzureKeyVaultBackendConfig } from '../../src/backends/azure-keyvault/azure-keyvault-schema.ts';
import { readSecret } from '../../src/secrets.ts';
import type { BrokerError } from '../../src/errors.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { createLogger } from '../../src/log.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { azureKeyVaultBackend, clientSecretCredential } from '../helpers/azure-keyvault.ts';
import {
  startAzureKeyVaultEmulator,
  type AzureKeyVaultEmulator,
} from '../helpers/azure-keyvault-emulator.ts';
import { spawnBroker, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import { expectAdoptedOnceStable } from '../helpers/rotation-adoption.ts';
import { startDeadline } from '../../src/deadline.ts';
import { headerOf } from '../helpers/envelopes.ts';

const VERSION = /^[0-9a-f]{32}$/;

interface Sealed {
  readonly seed: Buffer;
  readonly ciphertext: Buffer;
  readonly key_id: string;
  readonly annotations: Record<string, Buffer>;
}

async function encryptOne(client: KmsV2Client): Promise<Sealed> {
  const seed = randomBytes(32);
  const { ciphertext, key_id, annotations } = await client.encrypt(seed);
  return { seed, ciphertext, key_id, annotations };
}

async function expectDecrypts(client: KmsV2Client, sealed: Sealed): Promise<void> {
  const { plaintext } = await client.decrypt(sealed);
  assert.deepEqual(plaintext, sealed.seed);
}

/** Waits until `predicate` holds: bounded polling, for state only the emulator can show. */
async function condition(predicate: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    if (predicate()) return;
    await new Promise(resolve => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Backends that wrapped a seed: the ciphertext's, then each annotation's. */
function wrapsOf(sealed: Sealed): string[] {
  return [
    decodeEnvelope(sealed.ciphertext).header.backend,
    ...Object.values(sealed.annotations).map(wrap => decodeEnvelope(wrap).header.backend),
  ];
}

describe('Azure Key Vault backend on the Key Vault emulator', () => {
  let emulator: AzureKeyVaultEmulator;
  let dir: string;
  let hsm: SoftHsmToken;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-azure-'));
    emulator = await startAzureKeyVaultEmulator(dir);
    hsm = createToken('azure-pair');
  });
  after(async () => {
    await emulator.stop();
    hsm.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  interface Serving {
    readonly config: TestConfig;
    readonly broker: BrokerProcess;
    readonly client: KmsV2Client;
    stop(): Promise<void>;
  }

  /** A broker on one Azure backend (with `overrides`), authenticated with a client secret. */
  async function startServing(
    overrides: Record<string, unknown> = {},
    top: Record<string, unknown> = {},
  ): Promise<Serving> {
    const config = writeConfig(undefined, {
      backends: [azureKeyVaultBackend(emulator, clientSecretCredential(emulator, dir), overrides)],
      failover: { order: ['azure'] },
      ...top,
    });
    const broker = await startBrokerProcess(config.path, process.env);
    const client = createKmsV2Client(config.socket, 10000);
    return {
      config,
      broker,
      client,
      async stop() {
        client.close();
        await broker.stop();
        rmSync(config.dir, { recursive: true, force: true });
      },
    };
  }

  /** The same, stopped after the test. */
  async function serve(
    t: TestContext,
    overrides: Record<string, unknown> = {},
    top: Record<string, unknown> = {},
  ): Promise<Serving> {
    const serving = await startServing(overrides, top);
    defer(t, () => serving.stop());
    return serving;
  }

  /** The backend in this process, as the broker builds it from a validated config. */
  async function openBackend(
    t: TestContext,
    credential: Record<string, unknown>,
    overrides: Record<string, unknown>,
  ): Promise<AzureKeyVaultBackend> {
    const config = validateConfig({
      socket: join(dir, 'unused.sock'),
      state: { path: join(dir, 'unused-state.json') },
      backends: [azureKeyVaultBackend(emulator, credential, overrides)],
      failover: { order: ['azure'] },
    }).backends[0] as AzureKeyVaultBackendConfig;
    const backend = new AzureKeyVaultBackend(config, {
      readSecret,
      readFile: readFileSync,
      logger: createLogger('fatal'),
    });
    await backend.open();
    defer(t, () => backend.close());
    return backend;
  }

  const deadline = () => startDeadline(5000);

  describe('one broker, default key size, no background probes', () => {
    const callMs = 1500;
    let serving: Serving;
    before(async () => {
      serving = await startServing(
        { keyName: 'shared', rsaKeySize: 3072 },
        // Without probes every vault request counted or faulted below is a call's own.
        { timeouts: { callMs }, health: { probeIntervalMs: 3600000, failureThreshold: 100 } },
      );
    });
    after(() => serving.stop());

    it('round-trips through the socket, one vault call per wrap and unwrap, the 32-hex version in the envelope', async t => {
      const { client } = serving;
      const [version] = emulator.versions('shared');
      assert.match(version ?? '', VERSION);
      const status = await client.status();
      assert.equal(status.healthz, 'ok');

      const before = {
        wraps: emulator.count('wrapkey'),
        unwraps: emulator.count('unwrapkey'),
        gets: emulator.count('get'),
      };
      const sealed: Sealed[] = [];
      for (let i = 0; i < 20; i++) sealed.push(await encryptOne(client));
      for (const item of sealed) await expectDecrypts(client, item);
      assert.equal(emulator.count('wrapkey') - before.wraps, 20);
      assert.equal(emulator.count('unwrapkey') - before.unwraps, 20);
      assert.equal(emulator.count('get') - before.gets, 0, 'no key GET per wrap or unwrap');

      const first = sealed[0];
      assert.ok(first);
      assert.equal(first.key_id, status.key_id);
      const envelope = decodeEnvelope(first.ciphertext);
      assert.deepEqual(headerOf(first.ciphertext), {
        backend: 'azure',
        keyVersion: version,
        mechanism: 'RSA-OAEP-256',
      });
      assert.equal(envelope.wrapped.length, 384, 'RSA-3072 OAEP output');
      assert.ok(first.ciphertext.length <= 1024);
      t.diagnostic(`envelope for a 32-byte DEK, RSA-3072: ${first.ciphertext.length} bytes`);
      assert.deepEqual([...emulator.apiVersions], ['2025-07-01']);
    });

    it('rejects a wrap that was tampered with, and one presented under another envelope header', async t => {
      const { client } = serving;
      const sealed = await encryptOne(client);
      const tampered = Buffer.from(sealed.ciphertext);
      tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
      await expectGrpcError(
        client.decrypt({ ...sealed, ciphertext: tampered }),
        GrpcStatus.INVALID_ARGUMENT,
        /^INVALID_CIPHERTEXT: backend azure: Key Vault could not unwrap/,
      );

      // The header's digest travels inside the wrap: the same bytes under another header do not open.
      const backend = await openBackend(t, clientSecretCredential(emulator, dir), { keyName: 'shared' });
      const { header, wrapped, aad } = decodeEnvelope(sealed.ciphertext);
      const request = { wrapped, keyVersion: header.keyVersion, mechanism: header.mechanism };
      assert.deepEqual(await backend.unwrap({ ...request, aad, deadline: deadline() }), sealed.seed);
      await assert.rejects(
        backend.unwrap({ ...request, aad: headerAad({ ...header, backend: 'other' }), deadline: deadline() }),
        { code: 'INVALID_CIPHERTEXT' },
      );
    });

    it('retries a throttled or failing call away, and answers UNAVAILABLE within the deadline when it persists', async t => {
      const { client } = serving;
      const sealed = await encryptOne(client);

      const injected = emulator.injected;
      emulator.failNext(1, 429, 1);
      await expectDecrypts(client, sealed);
      emulator.failNext(1, 503);
      await encryptOne(client);
      assert.equal(emulator.injected - injected, 2, 'both faults were met, and retried');

      for (const [status, retryAfter] of [
        [429, 30],
        [503, undefined],
      ] as const) {
        emulator.failNext(1000, status, retryAfter);
        for (const call of [() => client.decrypt(sealed), () => client.encrypt(randomBytes(32))]) {
          const started = performance.now();
          await expectGrpcError(
            call(),
            GrpcStatus.UNAVAILABLE,
            new RegExp(
              `^BACKEND_UNAVAILABLE: backend azure: Azure Key Vault is unavailable \\(HTTP_${status}\\)$`,
            ),
          );
          const ms = performance.now() - started;
          // A Retry-After beyond the deadline is not waited for: the caller hears at once.
          assert.ok(ms < callMs, `HTTP ${status}: answered after ${Math.round(ms)} ms`);
          t.diagnostic(`HTTP ${status} throughout: UNAVAILABLE after ${Math.round(ms)} ms`);
        }
      }
      emulator.failNext(0, 200);
      await expectDecrypts(client, sealed);
    });
  });

  it('rotates through the admin API: key_id changes, new wraps pin the new version, old ones decrypt, also after a restart', async t => {
    const { config, broker, client } = await serve(t, {
      keyName: 'rotate',
      rotationPoll: { intervalMs: 200, stableForMs: 0 },
    });
    const old = await encryptOne(client);
    const response = await adminClient(config.adminSocket).post(
      '/v1/backends/azure/rotate',
      config.adminToken,
    );
    assert.equal(response.status, 200, response.text);
    const rotated = response.body as { version: string; keyId: string };
    assert.match(rotated.version, VERSION);
    assert.deepEqual(emulator.versions('rotate').at(-1), rotated.version);
    assert.equal(emulator.versions('rotate').length, 2);
    await broker.waitForLog(record => record.msg === 'key set changed' && record.keyId === rotated.keyId);

    const fresh = await encryptOne(client);
    assert.equal(fresh.key_id, rotated.keyId);
    assert.notEqual(fresh.key_id, old.key_id);
    assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, rotated.version);
    await expectDecrypts(client, old);
    // The rotation poll (every 200 ms here) finds the broker's own new version already writing:
    // no second change once it has looked a few times.
    const reads = emulator.count('get');
    await condition(() => emulator.count('get') >= reads + 4, 'rotation polls after the rotation');
    assert.equal(broker.logs.filter(record => record.msg === 'key set changed').length, 1);

    // A restarted broker reconciles the state file with the vault's versions: both still open.
    await broker.stop();
    const again = await startBrokerProcess(config.path, process.env);
    defer(t, () => again.stop());
    assert.equal((await client.status()).key_id, rotated.keyId);
    await expectDecrypts(client, old);
    await expectDecrypts(client, fresh);
  });

  it('adopts a version created in the vault once it has been stable, changing key_id once', async t => {
    const stableForMs = 1500;
    const { broker, client } = await serve(t, {
      keyName: 'external',
      rotationPoll: { intervalMs: 200, stableForMs },
    });
    const old = await encryptOne(client);
    const [first] = emulator.versions('external');
    const created = await emulator.rotate('external');
    const seen = await broker.waitForLog(
      record => record.msg === 'new key version seen in the backend' && record.version === created,
    );
    // Until adopted, Encrypt keeps the old key_id and the pinned old version.
    const meanwhile = await encryptOne(client);
    assert.equal(meanwhile.key_id, old.key_id);
    assert.equal(decodeEnvelope(meanwhile.ciphertext).header.keyVersion, first);

    await expectAdoptedOnceStable(broker, client, seen, old.key_id, stableForMs);
    const fresh = await encryptOne(client);
    assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, created);
    await expectDecrypts(client, old);
    await expectDecrypts(client, meanwhile);
    assert.equal(broker.logs.filter(record => record.msg === 'key set changed').length, 1);
  });

  it('refuses to start with a wrong client secret, naming the credential type and never the secret', async t => {
    const credential = clientSecretCredential(emulator, dir, { fileName: 'wrong-secret' });
    writeFileSync(credential.clientSecretFile as string, 'not-the-secret-4711\n');
    const config = writeConfig(undefined, {
      backends: [azureKeyVaultBackend(emulator, credential, { keyName: 'wrong-credential' })],
      failover: { order: ['azure'] },
    });
    defer(t, () => rmSync(config.dir, { recursive: true, force: true }));
    const broker = spawnBroker(config.path, process.env);
    defer(t, () => broker.stop('SIGKILL'));
    assert.equal(await broker.exited, 1);
    const output = broker.text.join('\n') + JSON.stringify(broker.logs);
    assert.match(
      output,
      /BACKEND_AUTH_FAILED: backend azure: no Key Vault access with the client-secret credential \(TOKEN_HTTP_401\)/,
    );
    assert.ok(!output.includes('not-the-secret-4711'));
    assert.deepEqual(emulator.versions('wrong-credential'), [], 'nothing was created');
  });

  it('authenticates as a workload identity with a federated token from a file', async t => {
    const tokenFile = join(dir, 'federated-token');
    const assertion = `eyJ.${randomBytes(24).toString('base64url')}.sig`;
    writeFileSync(tokenFile, assertion, { mode: 0o600 });
    const backend = await openBackend(
      t,
      {
        type: 'workload-identity',
        tenantId: emulator.tenantId,
        clientId: emulator.addFederatedClient(assertion),
        tokenFile,
        authorityHost: emulator.url,
      },
      { keyName: 'workload' },
    );
    const created = await backend.createVersion(deadline());
    assert.deepEqual(await backend.listVersions(deadline()), [created]);
    const [plaintext, aad] = [randomBytes(32), randomBytes(40)];
    const wrapped = await backend.wrap({ plaintext, aad, keyVersion: created.version, deadline: deadline() });
    const request = { wrapped, aad, keyVersion: created.version, mechanism: backend.mechanism };
    assert.deepEqual(await backend.unwrap({ ...request, deadline: deadline() }), plaintext);
  });

  it('wraps with AES key wrap (A256KW) on a Managed HSM AES key', async t => {
    const backend = await openBackend(t, clientSecretCredential(emulator, dir), {
      keyName: 'aes',
      algorithm: 'A256KW',
      hsm: true,
    });
    assert.equal(backend.mechanism, 'A256KW');
    const created = await backend.createVersion(deadline());
    const [plaintext, aad] = [randomBytes(32), randomBytes(40)];
    const wrapped = await backend.wrap({ plaintext, aad, keyVersion: created.version, deadline: deadline() });
    // RFC 3394 adds 8 bytes to the seed and the 32-byte header digest.
    assert.equal(wrapped.length, 72);
    const request = { wrapped, keyVersion: created.version, mechanism: 'A256KW' };
    assert.deepEqual(await backend.unwrap({ ...request, aad, deadline: deadline() }), plaintext);
    await assert.rejects(backend.unwrap({ ...request, aad: randomBytes(40), deadline: deadline() }), {
      code: 'INVALID_CIPHERTEXT',
    });
  });

  it('names the missing permission when the vault denies an operation', async t => {
    const version = await emulator.createKey('limited');
    const backend = await openBackend(
      t,
      clientSecretCredential(emulator, dir, { permissions: ['get', 'list', 'wrapKey'] }),
      {
        keyName: 'limited',
      },
    );
    await backend.probe(deadline());
    const [plaintext, aad] = [randomBytes(32), randomBytes(40)];
    const wrapped = await backend.wrap({ plaintext, aad, keyVersion: version, deadline: deadline() });
    const denied = await backend
      .unwrap({ wrapped, aad, keyVersion: version, mechanism: backend.mechanism, deadline: deadline() })
      .then(
        () => assert.fail('the unwrap was allowed'),
        (error: unknown) => error as BrokerError,
      );
    assert.equal(denied.code, 'BACKEND_PERMISSION_DENIED');
    assert.equal(denied.grpcCode, GrpcStatus.FAILED_PRECONDITION);
    assert.equal(
      denied.message,
      `backend azure: Azure Key Vault denied the broker's credentials keys/unwrapKey (RBAC data action Microsoft.KeyVault/vaults/keys/unwrap/action) on ${emulator.url}/keys/limited`,
    );
    await assert.rejects(backend.createVersion(deadline()), {
      code: 'BACKEND_PERMISSION_DENIED',
      message: /keys\/create \(RBAC data action Microsoft\.KeyVault\/vaults\/keys\/create\/action\)/,
    });
  });

  it('with wrap: all beside SoftHSM, keeps reading and writing while the vault is down, and recovers', async t => {
    const config = writeConfig(undefined, {
      backends: [
        azureKeyVaultBackend(emulator, clientSecretCredential(emulator, dir), { keyName: 'paired' }),
        pkcs11Backend(hsm),
      ],
      failover: { order: ['azure', 'hsm'], wrap: 'all', hysteresisMs: 500 },
      timeouts: { callMs: 2000 },
      health: { probeIntervalMs: 200 },
    });
    defer(t, () => rmSync(config.dir, { recursive: true, force: true }));
    const broker = await startBrokerProcess(config.path, hsm.env);
    defer(t, () => broker.stop());
    const client = createKmsV2Client(config.socket, 10000);
    defer(t, () => client.close());
    defer(t, () => emulator.restart());

    const readable: Sealed[] = [];
    for (let i = 0; i < 10; i++) readable.push(await encryptOne(client));
    for (const item of readable) assert.deepEqual(wrapsOf(item), ['azure', 'hsm']);

    // Readers and a writer run throughout; the vault stops under them, and comes back.
    const failures: string[] = [];
    const written: Sealed[] = [];
    let reads = 0;
    let stopped = false;
    const progress = new Set<() => void>();
    const endAt = Date.now() + 30000;
    const worker = async (index: number) => {
      for (let i = 0; !stopped && i < 5000 && Date.now() < endAt; i++) {
        try {
          if (index === 0) written.push(await encryptOne(client));
          else {
            await expectDecrypts(client, readable[(i + index) % readable.length] as Sealed);
            reads++;
          }
        } catch (error) {
          failures.push(String((error as { details?: string }).details ?? error));
        }
        for (const check of progress) check();
      }
    };
    const traffic = Promise.all([0, 1, 2, 3].map(worker));
    /** Resolves once finished calls make `predicate` hold. */
    const until = (predicate: () => boolean, what: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => settle(() => reject(new Error(`timed out: ${what}`))), 15000);
        const settle = (done: () => void) => {
          clearTimeout(timer);
          progress.delete(check);
          done();
        };
        const check = () => {
          if (predicate()) settle(resolve);
        };
        progress.add(check);
        check();
      });
    let mark = 0;
    try {
      await until(() => written.length >= 3 && reads >= 10, 'traffic before the stop');
      await emulator.stop();
      await broker.waitForLog(record => record.msg === 'backend unhealthy' && record.backend === 'azure');
      const [writtenBefore, readsBefore] = [written.length, reads];
      await until(
        () => written.length >= writtenBefore + 5 && reads >= readsBefore + 50,
        'traffic while down',
      );
      assert.deepEqual(failures, [], 'no call failed while the vault was down');
      for (const item of written.slice(writtenBefore)) {
        assert.deepEqual(wrapsOf(item), ['hsm'], 'written by the HSM alone');
      }

      mark = broker.logs.length;
      await emulator.restart();
      await broker.waitForLog(
        record =>
          broker.logs.indexOf(record) >= mark &&
          record.msg === 'backend recovered' &&
          record.backend === 'azure',
      );
      const readsBack = reads;
      await until(() => reads >= readsBack + 20, 'traffic after the restart');
    } finally {
      stopped = true;
      await traffic;
    }
    assert.deepEqual(failures, [], 'no call failed at any time');
    t.diagnostic(`${reads} reads and ${written.length} writes, none failed`);
    // Once the vault has been back for the hysteresis, the broker heals the thin seed with a
    // new key_id; new seeds carry both wraps, and the vault's wrap alone opens them.
    const healedKeySet = await broker.waitForLog(
      record => broker.logs.indexOf(record) >= mark && record.msg === 'key set changed',
      10000,
    );
    const healed = await encryptOne(client);
    assert.equal(healed.key_id, healedKeySet.keyId);
    assert.deepEqual(wrapsOf(healed), ['azure', 'hsm']);
    await expectDecrypts(client, { ...healed, annotations: {} });
    assert.ok(!(`azure${WRAP_ANNOTATION_SUFFIX}` in healed.annotations), 'the vault wraps in the ciphertext');
  });
});
