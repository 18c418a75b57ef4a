// The Transit hot path (encrypt and decrypt straight through undici) against a loopback HTTP
// server that plays Vault: it sends the token and namespace node-vault would, never follows a
// redirect, honours the attempt's deadline, holds at most maxConcurrency connections, and
// leaves failures shaped so that Vault's classification reads them as it reads node-vault's.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { BackendCallError } from '../../src/backends/call-policy.ts';
import { createRemoteCaller } from '../../src/backends/remote-caller.ts';
import {
  createTransitHotPath,
  type TransitHotPath,
} from '../../src/backends/vault-transit/transit-hot-path.ts';
import { vaultFailures } from '../../src/backends/vault-transit/vault-http.ts';
import type { VaultTransitBackendConfig } from '../../src/backends/vault-transit/vault-transit-schema.ts';
import { startDeadline } from '../../src/deadline.ts';
import { BrokerError } from '../../src/errors.ts';

interface Seen {
  readonly method: string | undefined;
  readonly url: string | undefined;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** What the fake Vault answers to each path; `hang` never answers. */
type Answer = { status: number; body: string; headers?: Record<string, string> } | 'hang';

const MAX_CONCURRENCY = 3;
const seen: Seen[] = [];
const answers = new Map<string, Answer>();
let server: http.Server;
let address: string;

function config(namespace?: string): VaultTransitBackendConfig {
  return {
    name: 'vault',
    type: 'vault-transit',
    address,
    mount: 'transit',
    key: 'kek',
    ...(namespace !== undefined && { namespace }),
    requestTimeoutMs: 300,
    maxConcurrency: MAX_CONCURRENCY,
    rotationPoll: { intervalMs: 30000, stableForMs: 60000 },
    createIfMissing: false,
    auth: { method: 'token', tokenEnv: 'VAULT_TOKEN' },
  };
}

function hotPath(token: () => string, namespace?: string): TransitHotPath {
  const caller = createRemoteCaller({
    backend: 'vault',
    service: 'Vault',
    maxConcurrency: MAX_CONCURRENCY,
    requestTimeoutMs: 300,
    failures: vaultFailures,
  });
  return createTransitHotPath(config(namespace), caller, {}, token);
}

async function post(path: TransitHotPath, to: string, budgetMs = 2000): Promise<unknown> {
  const deadline = startDeadline(budgetMs);
  try {
    return await path.post(to, { plaintext: 'AAAA' }, deadline);
  } finally {
    deadline.dispose();
  }
}

async function failure(promise: Promise<unknown>): Promise<BackendCallError | BrokerError> {
  const error: unknown = await promise.then(
    () => assert.fail('expected a failure'),
    (reason: unknown) => reason,
  );
  assert.ok(error instanceof BackendCallError || error instanceof BrokerError, String(error));
  return error;
}

before(async () => {
  server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      seen.push({
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks).toString(),
      });
      const answer = answers.get(request.url ?? '') ?? { status: 404, body: '{"errors":[]}' };
      if (answer === 'hang') return;
      response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      response.end(answer.body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  address = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

describe('Transit hot path', () => {
  it("POSTs JSON to /v1/<path> with the HTTP layer's current token and the namespace", async () => {
    answers.set('/v1/transit/encrypt/kek', { status: 200, body: '{"data":{"ciphertext":"vault:v1:x"}}' });
    let token = 'first-token';
    const path = hotPath(() => token, 'team-a');
    try {
      assert.deepEqual(await post(path, 'transit/encrypt/kek'), { data: { ciphertext: 'vault:v1:x' } });
      token = 'renewed-token';
      await post(path, 'transit/encrypt/kek');
    } finally {
      await path.close();
    }
    const [first, second] = seen.slice(-2);
    assert.equal(first?.method, 'POST');
    assert.equal(first?.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(first?.body ?? ''), { plaintext: 'AAAA' });
    assert.equal(first?.headers['x-vault-token'], 'first-token');
    assert.equal(first?.headers['x-vault-namespace'], 'team-a');
    assert.equal(second?.headers['x-vault-token'], 'renewed-token', 'a renewed token is used at once');
  });

  it('sends no token header while logged out, and no namespace header without one', async () => {
    answers.set('/v1/transit/decrypt/kek', { status: 200, body: '{"data":{"plaintext":"AAAA"}}' });
    const path = hotPath(() => '');
    try {
      await post(path, 'transit/decrypt/kek');
    } finally {
      await path.close();
    }
    const last = seen.at(-1);
    assert.equal(last?.headers['x-vault-token'], undefined);
    assert.equal(last?.headers['x-vault-namespace'], undefined);
  });

  it('never follows a redirect: a 307 is a failure and the target is never asked', async () => {
    answers.set('/v1/transit/encrypt/moved', {
      status: 307,
      body: '',
      headers: { location: `${address}/v1/transit/encrypt/elsewhere` },
    });
    const path = hotPath(() => 'token');
    try {
      const error = await failure(post(path, 'transit/encrypt/moved'));
      assert.ok(error instanceof BackendCallError);
      assert.equal(error.cause, 'HTTP_307');
    } finally {
      await path.close();
    }
    assert.ok(!seen.some(request => request.url === '/v1/transit/encrypt/elsewhere'));
  });

  it('classifies answers as node-vault errors are: sealed, unmounted, denied, rejected, a proxy page', async () => {
    const cases: [string, Answer, string, string][] = [
      ['sealed', { status: 503, body: '{"errors":["Vault is sealed"]}' }, 'unavailable', 'VAULT_SEALED'],
      [
        'nomount',
        { status: 404, body: '{"errors":["no handler for route \\"x\\""]}' },
        'not-found',
        'VAULT_NO_MOUNT',
      ],
      ['denied', { status: 403, body: '{"errors":["permission denied"]}' }, 'permission', 'HTTP_403'],
      [
        'bad',
        { status: 400, body: '{"errors":["cipher: message authentication failed"]}' },
        'rejected',
        'HTTP_400',
      ],
      ['proxy', { status: 502, body: '<html>Bad Gateway</html>' }, 'unavailable', 'HTTP_502'],
    ];
    const path = hotPath(() => 'token');
    try {
      for (const [key, answer, kind, cause] of cases) {
        answers.set(`/v1/transit/decrypt/${key}`, answer);
        const error = await failure(post(path, `transit/decrypt/${key}`));
        assert.ok(error instanceof BackendCallError, `${key}: ${String(error)}`);
        assert.deepEqual([error.kind, error.cause], [kind, cause], key);
      }
    } finally {
      await path.close();
    }
  });

  it("honours the attempt's deadline against a server that never answers", async () => {
    answers.set('/v1/transit/encrypt/hang', 'hang');
    const path = hotPath(() => 'token');
    const started = performance.now();
    try {
      const error = await failure(post(path, 'transit/encrypt/hang', 250));
      assert.ok(error instanceof BrokerError, String(error));
      assert.equal(error.code, 'DEADLINE_EXCEEDED');
    } finally {
      await path.close();
    }
    // Bounded far above 250 ms so a loaded machine passes; without the signal, undici would
    // wait its own 300 s headers timeout.
    assert.ok(performance.now() - started < 10_000);
  });

  it('reads a broken connection as the socket error the shared table retries', async () => {
    const reset = http.createServer(request => request.socket.destroy());
    reset.listen(0, '127.0.0.1');
    await once(reset, 'listening');
    const caller = createRemoteCaller({
      backend: 'vault',
      service: 'Vault',
      maxConcurrency: 1,
      requestTimeoutMs: 300,
      failures: vaultFailures,
    });
    const resetAddress = `http://127.0.0.1:${(reset.address() as AddressInfo).port}`;
    const path = createTransitHotPath({ ...config(), address: resetAddress }, caller, {}, () => 't');
    try {
      const error = await failure(post(path, 'transit/encrypt/kek'));
      assert.ok(error instanceof BackendCallError, String(error));
      assert.deepEqual([error.kind, error.cause], ['unavailable', 'ECONNRESET']);
    } finally {
      await path.close();
      reset.close();
    }
  });

  it('opens at most maxConcurrency - 1 keep-alive connections, and reuses them', async () => {
    answers.set('/v1/transit/encrypt/kek', { status: 200, body: '{"data":{"ciphertext":"vault:v1:x"}}' });
    const connections = new Set<Socket>();
    const count = (socket: Socket) => connections.add(socket);
    server.on('connection', count);
    const path = hotPath(() => 'token');
    try {
      await Promise.all(Array.from({ length: 40 }, () => post(path, 'transit/encrypt/kek', 5000)));
      await Promise.all(Array.from({ length: 40 }, () => post(path, 'transit/encrypt/kek', 5000)));
    } finally {
      await path.close();
      server.off('connection', count);
    }
    // node-vault keeps one more for the other calls: together at most maxConcurrency.
    assert.ok(
      connections.size >= 1 && connections.size <= MAX_CONCURRENCY - 1,
      `${connections.size} connections`,
    );
  });
});
