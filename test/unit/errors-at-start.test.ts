// Which errors stop start-up is one mark in the error catalog (`atStart`), read by `serve`'s
// exit code and by the broker for a backend that fails to connect at start; docs/errors.md
// lists the marked codes and must not drift from it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { atStartOf, BrokerError, errorCatalog, type AtStart, type ErrorCode } from '../../src/errors.ts';

const codes = Object.keys(errorCatalog) as ErrorCode[];
const markedAs = (mark: AtStart) => codes.filter(code => atStartOf(new BrokerError(code, 'm')) === mark);

/** The catalog codes the docs/errors.md bullet that starts with `start` names (not its errnos). */
function documentedCodes(start: string): string[] {
  const markdown = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const bullet = markdown.split('\n- ').find(item => item.startsWith(start));
  assert.ok(bullet !== undefined, `docs/errors.md has no bullet starting ${start}`);
  return [...bullet.matchAll(/`([A-Z][A-Z_]+)`/g)]
    .map(match => match[1] as string)
    .filter(code => code in errorCatalog);
}

describe('errors that stop start-up', () => {
  it('exit 4: the failures no restart mends, as serve and connectReachable held them by hand', () => {
    assert.deepEqual(markedAs('needs-operator').sort(), [
      'CONFIG_INVALID',
      'HSM_KEY_UNSAFE',
      'HSM_LOGIN_FAILED',
      'HSM_MECHANISM_UNSUPPORTED',
      'KEY_MECHANISM_MISMATCH',
      'SOCKET_PATH_INVALID',
      'STATE_CORRUPT',
      'STATE_MISMATCH',
      'STATE_WRITE_FAILED',
    ]);
  });

  it('a bug stops start-up but is left to a restart', () => {
    assert.deepEqual(markedAs('fatal'), ['INTERNAL']);
  });

  it('a full disk may be freed by others: STATE_WRITE_FAILED then stops start-up without exit 4', () => {
    for (const cause of ['ENOSPC', 'EDQUOT'])
      assert.equal(atStartOf(new BrokerError('STATE_WRITE_FAILED', 'm', cause)), 'fatal', cause);
    for (const cause of ['EROFS', 'EACCES', undefined])
      assert.equal(atStartOf(new BrokerError('STATE_WRITE_FAILED', 'm', cause)), 'needs-operator', cause);
    // The cause matters only where the catalog names it.
    assert.equal(atStartOf(new BrokerError('HSM_LOGIN_FAILED', 'm', 'ENOSPC')), 'needs-operator');
  });

  it('what may pass by itself is not marked: a missing token, an unreachable backend, a busy socket', () => {
    for (const code of [
      'HSM_TOKEN_NOT_FOUND',
      'BACKEND_UNAVAILABLE',
      'KEY_MISSING',
      'SOCKET_IN_USE',
    ] as const)
      assert.equal(atStartOf(new BrokerError(code, 'm')), undefined, code);
  });

  it('docs/errors.md lists the marked codes', () => {
    assert.deepEqual(documentedCodes('**exit 4**').sort(), markedAs('needs-operator').sort());
    const mayPass = codes.filter(code => 'mayPassOn' in errorCatalog[code]);
    assert.deepEqual(
      documentedCodes('**exit 1, start-up stops**').sort(),
      [...markedAs('fatal'), ...mayPass].sort(),
    );
  });
});
