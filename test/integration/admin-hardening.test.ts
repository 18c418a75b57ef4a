// The admin listener against a hostile caller: no token means 401 before anything is parsed
// (no schema details), every refusal is problem+json (the framework's and node's too), and
// the plain-HTTP loopback listener answers only requests addressed to the loopback, so a
// DNS-rebinding page cannot read /metrics or /readyz. Real `kms-broker serve` processes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { adminClient, problem, type AdminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

/** Starts a broker and resolves with the admin address it logged. */
async function serve(
  config: TestConfig,
  token: SoftHsmToken,
): Promise<{ broker: BrokerProcess; address: string }> {
  const broker = await startBrokerProcess(config.path, token.env);
  const record = await broker.waitForLog(entry => entry.msg === 'admin API listening');
  return { broker, address: record.address as string };
}

describe('admin listener against hostile callers', () => {
  let token: SoftHsmToken;
  let tcp: { broker: BrokerProcess; address: string };
  let unix: { broker: BrokerProcess; address: string };
  let tcpConfig: TestConfig;
  let unixConfig: TestConfig;
  let admin: AdminClient;
  let port: string;

  before(async () => {
    token = createToken();
    const base = writeConfig(token);
    tcpConfig = writeConfig(
      token,
      { admin: { ...(base.values.admin as Record<string, unknown>), listen: '127.0.0.1:0' } },
      base.dir,
    );
    unixConfig = writeConfig(token);
    tcp = await serve(tcpConfig, token);
    unix = await serve(unixConfig, token);
    admin = adminClient(tcp.address);
    port = new URL(tcp.address).port;
  });

  after(async () => {
    await tcp?.broker.stop();
    await unix?.broker.stop();
    token?.remove();
  });

  it('answers a change without a valid token with 401 before reading its body, naming no schema', async () => {
    const badBodies = ['{"order":["nope"],"wrap":"sometimes","bogus":1}', 'not json at all', '[]'];
    for (const body of badBodies) {
      for (const headers of [{}, { authorization: 'Bearer not-a-token' }]) {
        const response = await admin.request('/v1/failover', {
          method: 'PUT',
          body,
          headers: { 'content-type': 'application/json', 'if-match': '"x"', ...headers },
        });
        const refused = problem(response, 401, 'UNAUTHORIZED');
        assert.doesNotMatch(
          response.text,
          /bogus|order|wrap|unknown field|body|JSON|must|schema/i,
          `a 401 names nothing of the schema: ${refused.detail}`,
        );
      }
    }
    // A viewer token may read but not change: refused as 403 before validation, too.
    const viewer = await admin.request('/v1/failover', {
      method: 'PUT',
      token: tcpConfig.viewerToken,
      body: '{"bogus":1}',
      headers: { 'content-type': 'application/json', 'if-match': '"x"' },
    });
    assert.doesNotMatch(problem(viewer, 403, 'FORBIDDEN').detail, /bogus|unknown field/);
  });

  it('answers an over-long path segment with 414 problem+json', async () => {
    const response = await admin.post(`/v1/backends/${'a'.repeat(500)}/rotate`, tcpConfig.adminToken);
    assert.match(problem(response, 414, 'URI_TOO_LONG').detail, /longer than 128 characters/);
  });

  it('answers headers over node’s limit with 431 problem+json', async () => {
    const response = await admin.request('/v1/status', {
      token: tcpConfig.viewerToken,
      headers: { 'x-filler': 'a'.repeat(20 * 1024) },
    });
    problem(response, 431, 'HEADERS_TOO_LARGE');
  });

  it('answers a body over 64 KiB with 413 problem+json', async () => {
    const response = await admin.request('/v1/failover', {
      method: 'PUT',
      token: tcpConfig.adminToken,
      headers: { 'content-type': 'application/json', 'if-match': '"x"' },
      body: JSON.stringify({ order: ['hsm'], wrap: 'first', padding: 'a'.repeat(70 * 1024) }),
    });
    problem(response, 413, 'BODY_TOO_LARGE');
  });

  it('answers a malformed URL and an unknown route with problem+json (400, 404)', async () => {
    problem(await admin.post('/v1/backends/%zz/rotate', tcpConfig.adminToken), 400, 'INVALID_REQUEST');
    problem(await admin.get('/v2/nothing-here', tcpConfig.viewerToken), 404, 'NOT_FOUND');
  });

  it('refuses on the loopback TCP listener a Host that is not the loopback, for every route', async () => {
    for (const host of [
      'evil.example',
      `evil.example:${port}`,
      '10.0.0.1',
      `127.0.0.1.evil.example:${port}`,
    ]) {
      for (const path of ['/metrics', '/readyz', '/healthz', '/v1/status']) {
        const response = await admin.request(path, { token: tcpConfig.viewerToken, headers: { host } });
        const refused = problem(response, 421, 'HOST_NOT_ALLOWED');
        assert.match(refused.detail, /loopback/);
        assert.doesNotMatch(response.text, /kms_broker_|keyId|ready/, `${host} ${path} leaks nothing`);
      }
    }
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `LOCALHOST:${port}`,
      `[::1]:${port}`,
      '127.0.0.1',
    ]) {
      const headers = { host };
      assert.equal((await admin.request('/readyz', { headers })).status, 200, host);
      assert.equal((await admin.request('/metrics', { headers })).status, 200, host);
      assert.equal(
        (await admin.request('/v1/status', { token: tcpConfig.viewerToken, headers })).status,
        200,
        host,
      );
    }
    // A unix socket is out of any browser's reach: its clients may send any Host.
    const local = adminClient(unixConfig.adminSocket);
    const headers = { host: 'evil.example' };
    assert.equal((await local.request('/readyz', { headers })).status, 200);
    assert.equal((await local.request('/v1/status', { token: unixConfig.viewerToken, headers })).status, 200);
  });
});
