import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

/** Asserts that a call fails with the given gRPC status code (and message, if given). */
export async function expectGrpcError(
  call: Promise<unknown>,
  code: number,
  message?: RegExp,
  label = '',
): Promise<void> {
  await assert.rejects(call, (error: { code?: number; details?: string }) => {
    assert.equal(
      error.code,
      code,
      `${label}: expected gRPC code ${code}, got ${error.code}: ${error.details}`,
    );
    if (message !== undefined) assert.match(error.details ?? '', message, label);
    return true;
  });
}

/** One unary call with raw request bytes (no protobuf encoding): for malformed messages. */
export function rawUnaryCall(socket: string, method: string, request: Buffer): Promise<Buffer> {
  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  const identity = (bytes: Buffer) => bytes;
  return new Promise<Buffer>((resolve, reject) => {
    client.makeUnaryRequest(
      method,
      identity,
      identity,
      request,
      { deadline: Date.now() + 3000 },
      (error, response) =>
        error || response === undefined ? reject(error ?? new Error('no response')) : resolve(response),
    );
  }).finally(() => client.close());
}
