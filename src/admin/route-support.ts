// What every admin route module shares: how error responses are described in the OpenAPI
// document, and the audit record every change writes (who, what, the result, the outcome).
import { toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Caller } from './auth.ts';

/** An error response as the OpenAPI document should describe it: problem+json. */
export const problem = {
  description: 'problem+json',
  content: { 'application/problem+json': { schema: { $ref: 'Problem#' } } },
};
export const problems = { 400: problem, 401: problem, 403: problem };

/** Runs a change and writes its audit record, whatever the outcome. */
export type Audited = <T>(
  caller: Caller,
  action: string,
  target: Record<string, unknown>,
  change: () => Promise<T>,
) => Promise<T>;

export function auditedBy(audit: Logger): Audited {
  return async (caller, action, target, change) => {
    try {
      const result = await change();
      audit.info({ actor: caller.name, action, target, result, outcome: 'ok' }, 'admin change');
      return result;
    } catch (error) {
      audit.warn(
        { actor: caller.name, action, target, outcome: toBrokerError(error).code },
        'admin change refused',
      );
      throw error;
    }
  };
}
