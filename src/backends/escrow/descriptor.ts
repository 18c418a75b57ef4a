// The escrow backend kind: a public key whose private half is held offline, in Shamir shares.
// It wraps every seed (in an annotation) and never unwraps; see docs/disaster-recovery.md.
import type { BackendKind } from '../backend-kind.ts';
import { escrowBackendSchema } from './escrow-schema.ts';

export const escrowKind: BackendKind<typeof escrowBackendSchema> = {
  type: 'escrow',
  schema: escrowBackendSchema,
  writeOnly: true,
  // A path is all it has; what the file holds is checked when the config loads (files).
  check: () => undefined,
  files: { publicKeyFile: 'escrow-public-key' },
  async create(config, deps) {
    const { EscrowBackend } = await import('./escrow-backend.ts');
    return new EscrowBackend(config, deps);
  },
};
