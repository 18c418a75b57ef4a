// The one way every remote backend calls its service: a failure is read first by the
// backend's hook (what it means for that service), then by the shared HTTP-status table, then
// by its socket code; requests run under the call policy inside the call's deadline; and a
// failure leaves as the broker error that names what the request needed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BackendCallError } from '../../src/backends/call-policy.ts';
import { httpStatusOf, kindOfStatus, statusFailure } from '../../src/backends/http-status.ts';
import {
  classifyFailure,
  createRemoteCaller,
  type ServiceFailures,
} from '../../src/backends/remote-caller.ts';
import { vaultFailures } from '../../src/backends/vault-transit/vault-http.ts';
import { startDeadline } from '../../src/deadline.ts';
import { BrokerError } from '../../src/errors.ts';
import { brokerError } from './expect-error.ts';

/** A service whose hook knows one error name, and leaves everything else to the shared rules. */
const failures: ServiceFailures = {
  classify: error =>
    (error as { name?: unknown } | undefined)?.name === 'SlowDown'
      ? new BackendCallError('throttled', 'SlowDown')
      : undefined,
  unexplained: 'TEST_CLIENT_ERROR',
  namesErrorCodes: true,
};

const withStatus = (statusCode: number, name = 'Error') =>
  Object.assign(new Error('text the service may change'), { name, statusCode });
const withCode = (code: string) => Object.assign(new Error('x'), { code });

function caller(requestTimeoutMs = 1000) {
  return createRemoteCaller({
    backend: 'remote',
    service: 'Test KMS',
    maxConcurrency: 4,
    requestTimeoutMs,
    failures,
  });
}

describe('HTTP status table', () => {
  it('reads each status the same for every service', () => {
    const statuses = [400, 401, 403, 404, 408, 409, 418, 422, 429, 500, 502, 503, 504];
    assert.deepEqual(Object.fromEntries(statuses.map(status => [status, kindOfStatus(status)])), {
      400: 'rejected',
      401: 'auth',
      403: 'permission',
      404: 'not-found',
      408: 'unavailable',
      409: 'rejected',
      418: 'other',
      422: 'other',
      429: 'throttled',
      500: 'unavailable',
      502: 'unavailable',
      503: 'unavailable',
      504: 'unavailable',
    });
  });

  it("lets a service's own meaning of a status win, and tags the failure by the status alone", () => {
    assert.equal(kindOfStatus(403, { 403: 'auth' }), 'auth');
    assert.equal(kindOfStatus(404, { 403: 'auth' }), 'not-found');
    const token = statusFailure(400, { 400: 'auth' }, 'TOKEN_');
    assert.deepEqual([token.kind, token.cause], ['auth', 'TOKEN_HTTP_400']);
  });

  it("finds the status where the services' clients put it", () => {
    assert.equal(httpStatusOf({ statusCode: 503 }), 503);
    assert.equal(httpStatusOf({ response: { statusCode: 404 } }), 404);
    assert.equal(httpStatusOf({ $metadata: { httpStatusCode: 429 } }), 429);
    assert.equal(httpStatusOf({ code: 'ECONNRESET' }), undefined);
    assert.equal(httpStatusOf(undefined), undefined);
  });
});

describe('failure classification', () => {
  it("takes the hook's answer over the status table", () => {
    const failure = classifyFailure(withStatus(503, 'SlowDown'), failures);
    assert.deepEqual([failure.kind, failure.cause], ['throttled', 'SlowDown']);
  });

  it('reads the status table when the hook has no answer', () => {
    const failure = classifyFailure(withStatus(403), failures);
    assert.deepEqual([failure.kind, failure.cause], ['permission', 'HTTP_403']);
    assert.ok(!failure.message.includes('may change'));
  });

  it('treats socket errors as an outage', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EAI_AGAIN']) {
      const failure = classifyFailure(withCode(code), failures);
      assert.deepEqual([failure.kind, failure.cause], ['unavailable', code]);
    }
  });

  it("names a client-side error code where the service's way is to, else its own tag", () => {
    assert.equal(classifyFailure(withCode('ENOTFOUND'), failures).cause, 'ENOTFOUND');
    const quiet = { ...failures, namesErrorCodes: false };
    assert.equal(classifyFailure(withCode('ENOTFOUND'), quiet).cause, 'TEST_CLIENT_ERROR');
    assert.equal(classifyFailure(new TypeError('x is not a function'), failures).cause, 'TEST_CLIENT_ERROR');
    assert.equal(classifyFailure(undefined, failures).kind, 'other');
  });

  it("keeps Vault's own meanings: a sealed 503, and 401 as before", () => {
    const vault = (statusCode: number, message = 'error') =>
      classifyFailure(Object.assign(new Error(message), { response: { statusCode } }), vaultFailures);
    assert.deepEqual(
      [vault(503, 'Vault is sealed').kind, vault(503, 'Vault is sealed').cause],
      ['unavailable', 'VAULT_SEALED'],
    );
    assert.equal(vault(503).cause, 'HTTP_503');
    assert.deepEqual(
      [vault(401).kind, vault(403).kind, vault(404).kind],
      ['other', 'permission', 'not-found'],
    );
  });
});

describe('remote caller', () => {
  it('retries an outage three times in all, then names the service and the cause', async () => {
    let attempts = 0;
    const deadline = startDeadline(5000);
    await assert.rejects(
      caller().call(deadline, { permission: 'test:Read on k' }, () => {
        attempts++;
        return Promise.reject(withStatus(503));
      }),
      brokerError('BACKEND_UNAVAILABLE', 'backend remote: Test KMS is unavailable (HTTP_503)'),
    );
    deadline.dispose();
    assert.equal(attempts, 3);
  });

  it('answers a denial at once, naming what the request needed', async () => {
    let attempts = 0;
    const deadline = startDeadline(5000);
    await assert.rejects(
      caller().call(deadline, { permission: 'test:Read on k' }, () => {
        attempts++;
        return Promise.reject(withStatus(403));
      }),
      brokerError('BACKEND_PERMISSION_DENIED', "denied the broker's credentials test:Read on k"),
    );
    deadline.dispose();
    assert.equal(attempts, 1);
  });

  it("prefers the request's own reading of a failure to the catalog's", async () => {
    const deadline = startDeadline(5000);
    const refine = (failure: BackendCallError) =>
      failure.kind === 'not-found'
        ? new BrokerError('KEY_MISSING', 'no key k here', failure.cause)
        : undefined;
    await assert.rejects(
      caller().call(deadline, { permission: 'p', refine }, () => Promise.reject(withStatus(404))),
      (error: unknown) =>
        error instanceof BrokerError && error.message === 'no key k here' && error.causeName === 'HTTP_404',
    );
    deadline.dispose();
  });

  it('leaves failures classified from run(), for backends that read the kind themselves', async () => {
    const deadline = startDeadline(5000);
    await assert.rejects(
      caller().run(deadline, () => Promise.reject(withStatus(401))),
      (error: unknown) =>
        error instanceof BackendCallError && error.kind === 'auth' && error.cause === 'HTTP_401',
    );
    deadline.dispose();
  });

  it('cuts each attempt at the request timeout and keeps every retry inside the deadline', async () => {
    const hang = (signal: AbortSignal) =>
      new Promise<never>((_resolve, reject) =>
        signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }),
      );
    // Three attempts of 100 ms fit in a 2 s deadline: the outage is answered as one.
    let started = Date.now();
    const roomy = startDeadline(2000);
    const timeouts: number[] = [];
    await assert.rejects(
      caller(100).call(roomy, { permission: 'p' }, (signal, timeoutMs) => {
        timeouts.push(timeoutMs);
        return hang(signal);
      }),
      brokerError('BACKEND_UNAVAILABLE', '(TIMEOUT)'),
    );
    roomy.dispose();
    assert.deepEqual(timeouts, [100, 100, 100]);
    assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);

    // A 350 ms deadline ends the retries: the second attempt gets only what is left of it.
    started = Date.now();
    const tight = startDeadline(350);
    /** How far past the deadline each attempt's own timeout would reach (never, within a tick). */
    const overruns: number[] = [];
    await assert.rejects(
      caller(200).call(tight, { permission: 'p' }, (signal, timeoutMs) => {
        overruns.push(Date.now() + timeoutMs - tight.at);
        return hang(signal);
      }),
      brokerError('DEADLINE_EXCEEDED'),
    );
    tight.dispose();
    const elapsed = Date.now() - started;
    assert.ok(overruns.length >= 2, `${overruns.length} attempts`);
    assert.ok(
      overruns.every(ms => ms <= 5),
      `attempts past the deadline by ${overruns.join(', ')} ms`,
    );
    assert.ok(elapsed >= 340 && elapsed < 850, `answered after ${elapsed} ms`);
  });
});
