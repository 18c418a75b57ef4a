// Schema pieces and rule helpers shared by the top-level config and every backend kind. They
// live with the backends, which import nothing from src/config, so that a kind's schema can
// use them; src/config imports them from here.
import { Type } from '@sinclair/typebox';

export const strict = { additionalProperties: false } as const;

/** A DNS label: backend names appear in envelopes, metrics and annotation keys. */
export const backendNameSchema = Type.String({ pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$' });
/** Backends one broker fronts at most (the config's list and the failover order). */
export const MAX_BACKENDS = 16;
/** all: every backend in the failover order wraps each seed; first: the first healthy one does. */
export const wrapModeSchema = Type.Union([Type.Literal('all'), Type.Literal('first')]);
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

/** The fields every remote key service's backend has, with the same bounds and defaults. */
export const remoteServiceFields = {
  /** Budget of one request; a call's own deadline may cut it shorter. */
  requestTimeoutMs: Type.Integer({ minimum: 100, maximum: 60000, default: 2000 }),
  /** Bound on concurrent requests; services throttle or collapse under unbounded load. */
  maxConcurrency: Type.Integer({ minimum: 1, maximum: 1024, default: 32 }),
  /** Adoption of rotations done in the key service itself. */
  rotationPoll: Type.Object(
    {
      intervalMs: Type.Integer({ minimum: 100, maximum: 3600000, default: 30000 }),
      /** A new current version must be seen unchanged this long before it writes. */
      stableForMs: Type.Integer({ minimum: 0, maximum: 86400000, default: 60000 }),
    },
    { ...strict, default: {} },
  ),
};
/** Optional endpoint override (private endpoints, emulators): scheme, host and port only. */
export const endpointSchema = Type.String({ pattern: '^https?://[^/?#]+$' });

/** Which keys one variant of a tagged object (an auth method, a credential type) needs and may use. */
export interface VariantKeys {
  readonly required: readonly string[];
  readonly allowed: readonly string[];
}

/**
 * Checks a tagged object against its variant's keys: a key the variant does not use is a
 * mistake worth naming, and so is a key it needs and lacks. `path` is the object's own key in
 * the backend (auth, credential), `tag` its discriminating key (method, type), `noun` how
 * messages name the variant ("auth method").
 */
export function checkVariantKeys(
  value: object,
  at: { readonly path: string; readonly tag: string; readonly noun: string },
  keys: VariantKeys,
): RuleViolation | undefined {
  const { path, tag, noun } = at;
  const fields = value as Record<string, unknown>;
  const variant = `${noun} ${String(fields[tag])}`;
  for (const key of Object.keys(fields)) {
    if (key !== tag && !keys.allowed.includes(key))
      return { path: `${path}.${key}`, message: `not used by ${variant}` };
  }
  for (const key of keys.required) {
    if (fields[key] === undefined) return { path: `${path}.${key}`, message: `${variant} needs it` };
  }
  return undefined;
}
