// AWS KMS failures classified by kind, from errors the real SDK makes out of AWS's answers (a
// loopback server answers each request with a chosen status and body), and the broker error
// each kind becomes.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DescribeKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { awsFailures } from '../../src/backends/aws-kms/aws-kms-errors.ts';
import { brokerErrorFor, type FailureKind } from '../../src/backends/call-policy.ts';
import { classifyFailure } from '../../src/backends/remote-caller.ts';
import { GrpcCode } from '../../src/errors.ts';

/** AWS's own meanings first, then the shared status table and socket codes, as every call reads them. */
const classifyAwsError = (error: unknown) => classifyFailure(error, awsFailures);

interface Answer {
  readonly status: number;
  readonly body: string;
  readonly type?: string;
}

const json = (type: string, status = 400): Answer => ({
  status,
  body: JSON.stringify({ __type: type, message: 'text the broker must never show' }),
});

const cases: [answer: Answer, kind: FailureKind, cause: string][] = [
  [json('ThrottlingException'), 'throttled', 'ThrottlingException'],
  [json('KMSInternalException', 500), 'unavailable', 'KMSInternalException'],
  [json('DependencyTimeoutException', 503), 'unavailable', 'DependencyTimeoutException'],
  [{ status: 503, body: '' }, 'unavailable', 'HTTP_503'],
  [{ status: 502, body: '<html>bad gateway</html>', type: 'text/html' }, 'unavailable', 'HTTP_502'],
  [json('AccessDeniedException'), 'permission', 'AccessDeniedException'],
  [json('UnrecognizedClientException'), 'auth', 'UnrecognizedClientException'],
  [json('ExpiredTokenException'), 'auth', 'ExpiredTokenException'],
  [json('InvalidSignatureException'), 'auth', 'InvalidSignatureException'],
  // moto's IAM checks answer in XML with 403.
  [{ status: 403, body: '<ErrorResponse/>', type: 'text/xml' }, 'auth', 'HTTP_403'],
  [json('NotFoundException'), 'not-found', 'NotFoundException'],
  [json('InvalidCiphertextException'), 'invalid-ciphertext', 'InvalidCiphertextException'],
  [json('IncorrectKeyException'), 'invalid-ciphertext', 'IncorrectKeyException'],
  [json('DisabledException'), 'rejected', 'DisabledException'],
  [json('KMSInvalidStateException'), 'rejected', 'KMSInvalidStateException'],
  [{ status: 418, body: '' }, 'other', 'HTTP_418'],
];

describe('AWS KMS error classification', () => {
  let server: Server;
  let client: KMSClient;
  let answer: Answer;

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.once('end', () => {
        res.writeHead(answer.status, { 'content-type': answer.type ?? 'application/x-amz-json-1.1' });
        res.end(answer.body);
      });
    });
    await new Promise<void>(resolve => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = server.address() as AddressInfo;
    client = new KMSClient({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      credentials: { accessKeyId: 'id', secretAccessKey: 'secret' },
      maxAttempts: 1,
    });
  });
  after(async () => {
    client.destroy();
    await new Promise(resolve => server.close(resolve));
  });

  async function failureFor(given: Answer): Promise<unknown> {
    answer = given;
    try {
      await client.send(new DescribeKeyCommand({ KeyId: 'alias/kek' }));
    } catch (error) {
      return error;
    }
    throw new Error('the request succeeded');
  }

  for (const [given, kind, cause] of cases) {
    it(`HTTP ${given.status} ${given.body.slice(0, 40)} is ${kind} (${cause})`, async () => {
      const failure = classifyAwsError(await failureFor(given));
      assert.equal(failure.kind, kind);
      assert.equal(failure.cause, cause);
    });
  }

  it('treats refused connections as an outage', async () => {
    const closed = new KMSClient({
      region: 'us-east-1',
      endpoint: 'http://127.0.0.1:1',
      credentials: { accessKeyId: 'id', secretAccessKey: 'secret' },
      maxAttempts: 1,
    });
    try {
      const error = await closed.send(new DescribeKeyCommand({ KeyId: 'alias/kek' })).then(
        () => assert.fail('the request succeeded'),
        (caught: unknown) => caught,
      );
      const failure = classifyAwsError(error);
      assert.deepEqual([failure.kind, failure.cause], ['unavailable', 'ECONNREFUSED']);
    } finally {
      closed.destroy();
    }
  });

  it('names the permission in a denial and keeps AWS text out of every broker error', async () => {
    const context = { backend: 'aws', service: 'AWS KMS', permission: 'kms:Decrypt on arn:aws:kms:x' };
    const denied = brokerErrorFor(classifyAwsError(await failureFor(json('AccessDeniedException'))), context);
    assert.equal(denied.grpcCode, GrpcCode.FAILED_PRECONDITION);
    assert.equal(
      denied.message,
      "backend aws: AWS KMS denied the broker's credentials kms:Decrypt on arn:aws:kms:x",
    );
    const throttled = brokerErrorFor(
      classifyAwsError(await failureFor(json('ThrottlingException'))),
      context,
    );
    assert.equal(throttled.grpcCode, GrpcCode.UNAVAILABLE);
    const tampered = brokerErrorFor(
      classifyAwsError(await failureFor(json('InvalidCiphertextException'))),
      context,
    );
    assert.equal(tampered.grpcCode, GrpcCode.INVALID_ARGUMENT);
    for (const error of [denied, throttled, tampered]) assert.doesNotMatch(error.message, /must never show/);
  });
});
