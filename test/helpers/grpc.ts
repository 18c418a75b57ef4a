import assert from 'node:assert/strict';

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
