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

export function checkPkcs11(config: Pkcs11BackendConfig): RuleViolation | undefined {
  return (
    exactlyOne(config, 'tokenLabel', 'tokenSerial') ??
    exactlyOne(config, 'pinFile', 'pinEnv', ' (a PIN is never written in the config)')
  );
}
