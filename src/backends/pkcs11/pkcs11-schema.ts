import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  envVarName,
  exactlyOne,
  strict,
  type RuleViolation,
} from '../config-schema.ts';

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
    mechanism: Type.Literal('aes-gcm', { default: 'aes-gcm' }),
    /** Sessions used for crypto; SoftHSM runs one operation per session at a time. */
    sessions: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
  },
  strict,
);
export type Pkcs11BackendConfig = Static<typeof pkcs11BackendSchema>;

const TOKEN_CHOICES = ['tokenLabel', 'tokenSerial', 'slotId'] as const;

export function checkPkcs11(config: Pkcs11BackendConfig): RuleViolation | undefined {
  const chosen = TOKEN_CHOICES.filter(key => config[key] !== undefined);
  if (chosen.length !== 1) return { message: 'set exactly one of tokenLabel, tokenSerial and slotId' };
  return exactlyOne(config, 'pinFile', 'pinEnv', ' (a PIN is never written in the config)');
}
