// The vault-transit backend kind: the Transit engine of HashiCorp Vault or OpenBao.
import type { BackendKind } from '../backend-kind.ts';
import { checkVaultTransit, vaultTransitBackendSchema } from './vault-transit-schema.ts';

export const vaultTransitKind: BackendKind<typeof vaultTransitBackendSchema> = {
  type: 'vault-transit',
  schema: vaultTransitBackendSchema,
  check: checkVaultTransit,
  files: {
    'tls.caFile': 'pem-certificates',
    'tls.certFile': 'pem-certificates',
    'tls.keyFile': 'pem-private-key',
    'auth.tokenFile': 'secret',
    'auth.secretIdFile': 'secret',
    'auth.jwtFile': 'secret',
  },
  async create(config, deps) {
    const { VaultTransitBackend } = await import('./vault-transit-backend.ts');
    return new VaultTransitBackend(config, deps);
  },
};
