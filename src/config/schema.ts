// The configuration schema: one source for validation (ajv) and for the TypeScript types
// (TypeBox). Every object rejects unknown keys so that a typo is an error, not a silently
// ignored setting.
import { Type, type Static, type TSchema } from '@sinclair/typebox';

const strict = { additionalProperties: false } as const;

/** A DNS label: backend names appear in envelopes, metrics and annotation keys. */
export const backendNameSchema = Type.String({ pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$' });
const absolutePath = Type.String({ minLength: 1, pattern: '^/' });

export const pkcs11BackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('pkcs11'),
    module: absolutePath,
    tokenLabel: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
    tokenSerial: Type.Optional(Type.String({ minLength: 1, maxLength: 16 })),
    pinFile: Type.Optional(absolutePath),
    pinEnv: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' })),
    keyLabel: Type.String({ minLength: 1, maxLength: 48, pattern: '^[A-Za-z0-9_.-]+$' }),
    generateIfMissing: Type.Boolean({ default: false }),
    mechanism: Type.Literal('aes-gcm', { default: 'aes-gcm' }),
    /** Sessions used for crypto; SoftHSM runs one operation per session at a time. */
    sessions: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
  },
  strict,
);
export type Pkcs11BackendConfig = Static<typeof pkcs11BackendSchema>;

/** Type-specific schemas, chosen by a backend's `type`. A new backend adds one line here. */
export const backendSchemas = {
  pkcs11: pkcs11BackendSchema,
} as const satisfies Record<string, TSchema>;
export type BackendType = keyof typeof backendSchemas;
export type BackendConfig = Pkcs11BackendConfig;

/** Fields common to all backends, checked before the type-specific schema. */
export const backendHeadSchema = Type.Object({
  name: backendNameSchema,
  type: Type.Union(Object.keys(backendSchemas).map(type => Type.Literal(type))),
});

export const configSchema = Type.Object(
  {
    socket: absolutePath,
    /** Octal permission bits of the socket file; the apiserver runs as root by default. */
    socketMode: Type.String({ pattern: '^0?[0-7]{3}$', default: '0600' }),
    state: Type.Object({ path: absolutePath }, strict),
    log: Type.Object(
      {
        level: Type.Union(
          [
            Type.Literal('fatal'),
            Type.Literal('error'),
            Type.Literal('warn'),
            Type.Literal('info'),
            Type.Literal('debug'),
            Type.Literal('trace'),
          ],
          { default: 'info' },
        ),
      },
      { ...strict, default: {} },
    ),
    timeouts: Type.Object(
      {
        /** Budget for one KMS call, well inside the apiserver's default 3 s. */
        callMs: Type.Integer({ minimum: 50, maximum: 60000, default: 2500 }),
        /** How long SIGTERM waits for in-flight calls before cancelling them. */
        shutdownGraceMs: Type.Integer({ minimum: 0, maximum: 120000, default: 10000 }),
      },
      { ...strict, default: {} },
    ),
    health: Type.Object(
      {
        probeIntervalMs: Type.Integer({ minimum: 100, maximum: 3600000, default: 10000 }),
      },
      { ...strict, default: {} },
    ),
    backends: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 16 }),
    failover: Type.Object(
      {
        order: Type.Array(backendNameSchema, { minItems: 1, maxItems: 16, uniqueItems: true }),
      },
      strict,
    ),
  },
  strict,
);

export type BrokerConfig = Readonly<
  Omit<Static<typeof configSchema>, 'backends'> & { backends: readonly Readonly<BackendConfig>[] }
>;
