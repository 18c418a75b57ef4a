// The AWS KMS client under the shared call policy: the SDK's own retries are off, transient
// failures are retried a bounded number of times inside the call's deadline, and a denial or
// an unloadable credential is answered at once with an error that says what to fix.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DescribeKeyCommand } from '@aws-sdk/client-kms';
import { createAwsKms } from '../../src/backends/aws-kms/aws-kms-client.ts';
import { startDeadline } from '../../src/deadline.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { AwsKmsBackendConfig } from '../../src/backends/aws-kms/aws-kms-schema.ts';
import { brokerError } from './expect-error.ts';

function backendConfig(endpoint: string, extra: Record<string, unknown> = {}): AwsKmsBackendConfig {
  const config = validateConfig({
    socket: '/run/kms-broker/kms.sock',
    state: { path: '/var/lib/kms-broker/state.json' },
    backends: [{ name: 'aws', type: 'aws-kms', region: 'us-east-1', endpoint, key: 'alias/kek', ...extra }],
    failover: { order: ['aws'] },
  });
  return config.backends[0] as AwsKmsBackendConfig;
}

describe('AWS KMS client', () => {
  let server: Server;
  let endpoint: string;
  let requests = 0;
  let type = 'ThrottlingException';

  before(async () => {
    process.env.AWS_ACCESS_KEY_ID ??= 'testing';
    process.env.AWS_SECRET_ACCESS_KEY ??= 'testing';
    server = createServer((req, res) => {
      requests++;
      req.resume();
      req.once('end', () => {
        res.writeHead(400, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(JSON.stringify({ __type: type, message: 'no' }));
      });
    });
    await new Promise<void>(resolve => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise(resolve => server.close(resolve)));

  const describeKey = (config: AwsKmsBackendConfig, budgetMs: number) => {
    const kms = createAwsKms(config);
    const started = Date.now();
    return kms
      .call(startDeadline(budgetMs), 'kms:DescribeKey on alias/kek', (client, abortSignal) =>
        client.send(new DescribeKeyCommand({ KeyId: 'alias/kek' }), { abortSignal }),
      )
      .finally(() => kms.close())
      .then(
        () => assert.fail('the request succeeded'),
        (error: unknown) => ({ error, elapsed: Date.now() - started }),
      );
  };

  it('retries throttling three times in all, with backoff, inside the deadline', async () => {
    type = 'ThrottlingException';
    requests = 0;
    const { error, elapsed } = await describeKey(backendConfig(endpoint), 2000);
    assert.equal(requests, 3);
    assert.ok(elapsed < 2000, `answered after ${elapsed} ms`);
    brokerError('BACKEND_UNAVAILABLE', 'AWS KMS is unavailable (ThrottlingException)')(error);
  });

  it('does not retry a denial', async () => {
    type = 'AccessDeniedException';
    requests = 0;
    const { error } = await describeKey(backendConfig(endpoint), 2000);
    assert.equal(requests, 1);
    brokerError(
      'BACKEND_PERMISSION_DENIED',
      "denied the broker's credentials kms:DescribeKey on alias/kek",
    )(error);
  });

  it('names the credentials file and profile when no credentials can be loaded, sending nothing', async () => {
    requests = 0;
    const config = backendConfig(endpoint, {
      credentialsFile: '/nonexistent/aws-credentials',
      profile: 'broker',
    });
    const { error } = await describeKey(config, 2000);
    assert.equal(requests, 0);
    brokerError(
      'BACKEND_AUTH_FAILED',
      'no AWS credentials could be loaded from profile broker of /nonexistent/aws-credentials',
    )(error);
  });
});
