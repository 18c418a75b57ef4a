// The vault-transit backend kind: the Transit engine of HashiCorp Vault or OpenBao.
import type { BackendKind } from '../backend-kind.ts';
import { checkVaultTransit, vaultTransitBackendSchema } from './vault-transit-schema.ts';

export const vaultTransitKind: BackendKind<typeof vaultTransitBackendSchema> = {
  type: 'vault-transit',
  schema: vaultTransitBackendSchema,
  check: checkVaultTransit,
  async create(config, deps) {
    const { VaultTransitBackend } = await import('./vault-transit-backend.ts');
    return new VaultTransitBackend(config, deps);
  },
};
