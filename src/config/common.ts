// Schema pieces and rule helpers shared by the top-level config and every backend kind.
import { Type } from '@sinclair/typebox';

export const strict = { additionalProperties: false } as const;

/** A DNS label: backend names appear in envelopes, metrics and annotation keys. */
export const backendNameSchema = Type.String({ pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$' });
export const absolutePath = Type.String({ minLength: 1, pattern: '^/' });
export const envVarName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' });

/** A rule broken by a validated backend: where (relative to the backend) and what. */
export interface RuleViolation {
  readonly path?: string;
  readonly message: string;
}

/** Exactly one of two alternative keys must be set (a file or a variable, a label or a serial). */
export function exactlyOne(
  value: object,
  first: string,
  second: string,
  why = '',
): RuleViolation | undefined {
  const has = (key: string) => (value as Record<string, unknown>)[key] !== undefined;
  return has(first) === has(second)
    ? { message: `set exactly one of ${first} and ${second}${why}` }
    : undefined;
}

/** Budget of one request to a remote key service; a call's own deadline may cut it shorter. */
export const requestTimeoutMsSchema = Type.Integer({ minimum: 100, maximum: 60000, default: 2000 });
/** Bound on concurrent requests to a remote key service; services throttle or collapse under unbounded load. */
export const maxConcurrencySchema = Type.Integer({ minimum: 1, maximum: 1024, default: 32 });
/** Adoption of rotations done in the key service itself. */
export const rotationPollSchema = Type.Object(
  {
    intervalMs: Type.Integer({ minimum: 100, maximum: 3600000, default: 30000 }),
    /** A new current version must be seen unchanged this long before it writes. */
    stableForMs: Type.Integer({ minimum: 0, maximum: 86400000, default: 60000 }),
  },
  { ...strict, default: {} },
);
/** Optional endpoint override (private endpoints, emulators): scheme, host and port only. */
export const endpointSchema = Type.String({ pattern: '^https?://[^/?#]+$' });
