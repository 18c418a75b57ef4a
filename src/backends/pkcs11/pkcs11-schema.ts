import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  envVarName,
  exactlyOne,
  strict,
  type RuleViolation,
} from '../config-schema.ts';

/** `sessions`: the default, and the most the broker ever pools (what hsm-probe reports against). */
export const DEFAULT_SESSIONS = 4;
export const MAX_SESSIONS = 64;

export const PKCS11_MECHANISMS = ['aes-gcm', 'aes-gcm-hsm-iv', 'aes-kwp', 'rsa-oaep'] as const;

export const pkcs11BackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('pkcs11'),
    module: absolutePath,
    tokenLabel: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
    tokenSerial: Type.Optional(Type.String({ minLength: 1, maxLength: 16 })),
    /** CK_SLOT_ID, for HSMs whose slot numbers are stable (SoftHSM's are not: use the label). */
    slotId: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    pinFile: Type.Optional(absolutePath),
    pinEnv: Type.Optional(envVarName),
    keyLabel: Type.String({ minLength: 1, maxLength: 48, pattern: '^[A-Za-z0-9_.-]+$' }),
    generateIfMissing: Type.Boolean({ default: false }),
    /** How new wraps are made; every envelope records its own, so older ones still read. */
    mechanism: Type.Union(
      PKCS11_MECHANISMS.map(name => Type.Literal(name)),
      { default: 'aes-gcm' },
    ),
    /** rsa-oaep: the OAEP and MGF1 hash (SoftHSM takes only sha1). */
    oaepHash: Type.Optional(Type.Union([Type.Literal('sha256'), Type.Literal('sha1')])),
    /** rsa-oaep: the modulus of key versions the broker creates. */
    rsaBits: Type.Optional(Type.Union([Type.Literal(3072), Type.Literal(4096)])),
    /** aes-kwp: the token's CK_MECHANISM_TYPE for RFC 5649 (default 0x210A, CKM_AES_KEY_WRAP_PAD). */
    kwpMechanism: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffffffff })),
    /** Sessions used for crypto; SoftHSM runs one operation per session at a time. */
    sessions: Type.Integer({ minimum: 1, maximum: MAX_SESSIONS, default: DEFAULT_SESSIONS }),
    /** The most crypto threads of the module (shared by backends on it); default `sessions`, at most 16. */
    threads: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SESSIONS })),
  },
  strict,
);
export type Pkcs11BackendConfig = Static<typeof pkcs11BackendSchema>;

const TOKEN_CHOICES = ['tokenLabel', 'tokenSerial', 'slotId'] as const;

/** Settings that only one mechanism reads: set with another, they would be silently ignored. */
const MECHANISM_SETTINGS = [
  { key: 'oaepHash', mechanism: 'rsa-oaep' },
  { key: 'rsaBits', mechanism: 'rsa-oaep' },
  { key: 'kwpMechanism', mechanism: 'aes-kwp' },
] as const;

export function checkPkcs11(config: Pkcs11BackendConfig): RuleViolation | undefined {
  const chosen = TOKEN_CHOICES.filter(key => config[key] !== undefined);
  if (chosen.length !== 1) return { message: 'set exactly one of tokenLabel, tokenSerial and slotId' };
  for (const { key, mechanism } of MECHANISM_SETTINGS) {
    if (config[key] !== undefined && config.mechanism !== mechanism)
      return { message: `applies only to mechanism ${mechanism}`, path: key };
  }
  return exactlyOne(config, 'pinFile', 'pinEnv', ' (a PIN is never written in the config)');
}
