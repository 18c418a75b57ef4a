// The backend's Alibaba Cloud KMS client: failures classified from what
// @alicloud/openapi-client really throws (a loopback server answers each request with a
// canned status and body in Alibaba's JSON error shape), and ListKeyVersions read across pages
// from the fake service.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import credentials from '@alicloud/credentials';
import {
  createAlibabaKmsClient,
  type AlibabaKmsClient,
} from '../../src/backends/alibaba-kms/alibaba-kms-client.ts';
import { ALIBABA_KMS_SERVICE, alibabaFailures } from '../../src/backends/alibaba-kms/alibaba-kms-errors.ts';
import { startDeadline } from '../../src/deadline.ts';
import { BackendCallError, type FailureKind } from '../../src/backends/call-policy.ts';
import type { AlibabaKmsBackendConfig } from '../../src/backends/alibaba-kms/alibaba-kms-schema.ts';
import { createRemoteCaller } from '../../src/backends/remote-caller.ts';
import { AlibabaKmsFake } from '../helpers/alibaba-kms-fake.ts';

interface Canned {
  status: number;
  body: string;
}

const cases: [status: number, code: string, kind: FailureKind][] = [
  [400, 'Throttling', 'throttled'],
  [400, 'Throttling.User', 'throttled'],
  [400, 'Rejected.Throttling', 'throttled'],
  [429, 'TooManyRequests', 'throttled'],
  [500, 'InternalFailure', 'unavailable'],
  [503, 'ServiceUnavailableTemporary', 'unavailable'],
  [404, 'InvalidAccessKeyId.NotFound', 'auth'],
  [400, 'SignatureDoesNotMatch', 'auth'],
  [400, 'InvalidSecurityToken.Expired', 'auth'],
  [403, 'Forbidden.RAM', 'permission'],
  [403, 'Forbidden.NoPermission', 'permission'],
  [404, 'Forbidden.KeyNotFound', 'not-found'],
  [404, 'Forbidden.AliasNotFound', 'not-found'],
  [409, 'Rejected.Disabled', 'rejected'],
  [400, 'InvalidParameter', 'rejected'],
  [418, 'Teapot', 'other'],
];

describe('Alibaba Cloud KMS client', () => {
  let server: Server;
  let next: Canned = { status: 200, body: '{}' };
  let client: AlibabaKmsClient;

  function clientFor(endpoint: string, requestTimeoutMs = 2000): AlibabaKmsClient {
    const config: AlibabaKmsBackendConfig = {
      name: 'ali',
      type: 'alibaba-kms',
      regionId: 'cn-hangzhou',
      keyId: 'alias/kek',
      endpoint,
      requestTimeoutMs,
      maxConcurrency: 4,
      rotationPoll: { intervalMs: 1000, stableForMs: 0 },
    };
    const credential = new credentials.default(
      new credentials.Config({ type: 'access_key', accessKeyId: 'AKID', accessKeySecret: 'secret' }),
    );
    const caller = createRemoteCaller({
      backend: config.name,
      service: ALIBABA_KMS_SERVICE,
      maxConcurrency: config.maxConcurrency,
      requestTimeoutMs,
      failures: alibabaFailures,
    });
    return createAlibabaKmsClient(config, credential, caller);
  }

  async function failure(call: Promise<unknown>): Promise<BackendCallError> {
    const error = await call.then(
      () => assert.fail('the call succeeded'),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof BackendCallError, `not classified: ${String(error)}`);
    return error;
  }

  before(async () => {
    server = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        response.writeHead(next.status, { 'content-type': 'application/json' });
        response.end(next.body);
      });
    });
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    client = clientFor(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  after(() => new Promise<void>(resolve => server.close(() => resolve())));

  for (const [status, code, kind] of cases) {
    it(`classifies HTTP ${status} ${code} as '${kind}', tagged with the code`, async () => {
      next = { status, body: JSON.stringify({ Code: code, Message: 'secret-free text', RequestId: 'r-1' }) };
      const error = await failure(client.describeKey('alias/kek', startDeadline(2000)));
      assert.equal(error.kind, kind);
      assert.equal(error.cause, code);
    });
  }

  it('tags an unusual code by its HTTP status, never by the text', async () => {
    next = { status: 400, body: JSON.stringify({ Code: 'has spaces; and <markup>', Message: 'x' }) };
    const error = await failure(client.describeKey('alias/kek', startDeadline(2000)));
    assert.deepEqual([error.kind, error.cause], ['rejected', 'HTTP_400']);
  });

  it("treats a proxy's non-JSON error page as an outage", async () => {
    next = { status: 502, body: '<html>Bad Gateway</html>' };
    const error = await failure(client.describeKey('alias/kek', startDeadline(2000)));
    assert.deepEqual([error.kind, error.cause], ['unavailable', 'NON_JSON_RESPONSE']);
  });

  it('ends an attempt that gets no answer at the request timeout, as an outage', async () => {
    const silent = createServer(() => undefined);
    await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as AddressInfo).port;
      const started = Date.now();
      const error = await failure(
        clientFor(`http://127.0.0.1:${port}`, 200).describeKey('k', startDeadline(2000)),
      );
      assert.deepEqual([error.kind, error.cause], ['unavailable', 'TIMEOUT']);
      // Three attempts of 200 ms and two short backoffs, well inside the 2 s budget.
      assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    } finally {
      silent.closeAllConnections();
      await new Promise<void>(resolve => silent.close(() => resolve()));
    }
  });

  it('treats a refused connection as an outage', async () => {
    const closed = createServer();
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>(resolve => closed.close(() => resolve()));
    const error = await failure(clientFor(`http://127.0.0.1:${port}`).describeKey('k', startDeadline(2000)));
    assert.deepEqual([error.kind, error.cause], ['unavailable', 'ECONNREFUSED']);
  });

  it('lists every version of a key across pages of ListKeyVersions', async () => {
    const fake = await AlibabaKmsFake.start();
    try {
      fake.addAccessKey('AKID', 'secret');
      const keyId = fake.createKey();
      for (let i = 0; i < 150; i++) fake.rotate(keyId);
      const versions = await clientFor(fake.endpoint).listKeyVersions(keyId, startDeadline(5000));
      assert.equal(versions.length, 151);
      assert.equal(new Set(versions.map(version => version.KeyVersionId)).size, 151);
      assert.equal(fake.calls.get('ListKeyVersions'), 2);
    } finally {
      await fake.stop();
    }
  });
});
