// Shared assertion for the unit tests: "this threw a BrokerError with that code".
import assert from 'node:assert/strict';
import { BrokerError, type ErrorCode } from '../../src/errors.ts';

/**
 * A validator for assert.throws / assert.rejects: the error is a BrokerError with `code`
 * and, when given, a message that contains `text` (or matches it, for a RegExp).
 */
export function brokerError(code: ErrorCode, text?: string | RegExp): (error: unknown) => true {
  return error => {
    assert.ok(error instanceof BrokerError, `expected a BrokerError, got ${String(error)}`);
    assert.equal(error.code, code, `wrong code for: ${error.message}`);
    if (typeof text === 'string')
      assert.ok(error.message.includes(text), `'${error.message}' lacks '${text}'`);
    else if (text !== undefined) assert.match(error.message, text);
    return true;
  };
}
