import { Type, type Static } from '@sinclair/typebox';
import { absolutePath, backendNameSchema, strict } from '../config-schema.ts';

export const escrowBackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('escrow'),
    /** The escrow-public.pem that `kms-broker escrow init` wrote; its private key stays offline. */
    publicKeyFile: absolutePath,
  },
  strict,
);
export type EscrowBackendConfig = Static<typeof escrowBackendSchema>;
