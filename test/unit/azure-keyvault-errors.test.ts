// Key Vault failures classified into what the call policy does about them, from the error
// types the SDKs really throw: RestError (HTTP status, or a socket code when nothing answered)
// and @azure/identity's credential errors, which wrap MSAL's with the token endpoint's status.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RestError } from '@azure/core-rest-pipeline';
import {
  AuthenticationError,
  AuthenticationRequiredError,
  CredentialUnavailableError,
} from '@azure/identity';
import { azureFailures } from '../../src/backends/azure-keyvault/azure-errors.ts';
import { BackendCallError, type FailureKind } from '../../src/backends/call-policy.ts';
import { classifyFailure } from '../../src/backends/remote-caller.ts';

/** Key Vault's own meanings first, then the shared status table and socket codes. */
const classifyAzureError = (error: unknown) => classifyFailure(error, azureFailures);

/** MSAL's error for a refused token request, as @azure/identity wraps it. */
function msalRefusal(status: number): AuthenticationRequiredError {
  const cause = Object.assign(new Error('AADSTS7000215: Invalid client secret provided.'), {
    name: 'ServerError',
    errorCode: 'invalid_client',
    status,
  });
  return new AuthenticationRequiredError({
    scopes: ['https://vault.azure.net/.default'],
    message: cause.message,
    cause,
  });
}

const cases: [what: string, error: unknown, kind: FailureKind, cause: string][] = [
  ['429 Throttled', new RestError('Throttled', { statusCode: 429 }), 'throttled', 'HTTP_429'],
  ['503 from the vault', new RestError('unavailable', { statusCode: 503 }), 'unavailable', 'HTTP_503'],
  ['500 from the vault', new RestError('internal', { statusCode: 500 }), 'unavailable', 'HTTP_500'],
  ['408 request timeout', new RestError('timeout', { statusCode: 408 }), 'unavailable', 'HTTP_408'],
  [
    '403 Forbidden',
    new RestError('Forbidden', { statusCode: 403, code: 'Forbidden' }),
    'permission',
    'HTTP_403',
  ],
  ['401 after a token', new RestError('Unauthorized', { statusCode: 401 }), 'auth', 'HTTP_401'],
  [
    '404 KeyNotFound',
    new RestError('KeyNotFound', { statusCode: 404, code: 'KeyNotFound' }),
    'not-found',
    'HTTP_404',
  ],
  [
    '400 BadParameter',
    new RestError('bad', { statusCode: 400, code: 'BadParameter' }),
    'rejected',
    'HTTP_400',
  ],
  ['409 Conflict', new RestError('conflict', { statusCode: 409 }), 'rejected', 'HTTP_409'],
  [
    'connection refused',
    new RestError('connect ECONNREFUSED', { code: 'ECONNREFUSED' }),
    'unavailable',
    'ECONNREFUSED',
  ],
  ['connection reset', new RestError('socket hang up', { code: 'ECONNRESET' }), 'unavailable', 'ECONNRESET'],
  [
    'no answer at all',
    new RestError('failed', { code: RestError.REQUEST_SEND_ERROR }),
    'unavailable',
    'REQUEST_SEND_ERROR',
  ],
  ['a wrong client secret', msalRefusal(401), 'auth', 'TOKEN_HTTP_401'],
  ['an unknown tenant', msalRefusal(400), 'auth', 'TOKEN_HTTP_400'],
  ['Entra ID throttling', msalRefusal(429), 'throttled', 'TOKEN_HTTP_429'],
  [
    'Entra ID outage',
    new AuthenticationError(503, { error: 'temporarily_unavailable' }),
    'unavailable',
    'TOKEN_HTTP_503',
  ],
  [
    'no identity available',
    new CredentialUnavailableError('no managed identity endpoint'),
    'auth',
    'CREDENTIAL_UNAVAILABLE',
  ],
  [
    'a refused token without status',
    new AuthenticationRequiredError({ scopes: [] }),
    'auth',
    'TOKEN_REFUSED',
  ],
  ['anything else', new TypeError('x is not a function'), 'other', 'AZURE_CLIENT_ERROR'],
];

describe('Azure Key Vault error classification', () => {
  for (const [what, error, kind, cause] of cases) {
    it(`classifies ${what} as '${kind}' (${cause})`, () => {
      const failure = classifyAzureError(error);
      assert.equal(failure.kind, kind);
      assert.equal(failure.cause, cause);
    });
  }

  it('never carries the service text into the failure', () => {
    const failure = classifyAzureError(
      new RestError('secret-ish detail from the vault', { statusCode: 400 }),
    );
    assert.ok(!failure.message.includes('secret-ish'));
  });

  it('passes an already classified failure through', () => {
    const failure = new BackendCallError('unavailable', 'TIMEOUT');
    assert.equal(classifyAzureError(failure), failure);
  });
});
