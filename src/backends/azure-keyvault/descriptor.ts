// The azure-keyvault backend kind: Azure Key Vault or Managed HSM keys.
import type { BackendKind } from '../backend-kind.ts';
import { checkAzureKeyVault, azureKeyVaultBackendSchema } from './azure-keyvault-schema.ts';

export const azureKeyVaultKind: BackendKind<typeof azureKeyVaultBackendSchema> = {
  type: 'azure-keyvault',
  schema: azureKeyVaultBackendSchema,
  check: checkAzureKeyVault,
  files: {
    'tls.caFile': 'pem-certificates',
    'credential.clientSecretFile': 'secret',
    'credential.certificateFile': 'pem-certificate-and-key',
    'credential.tokenFile': 'secret',
  },
  async create(config, deps) {
    const { AzureKeyVaultBackend } = await import('./azure-keyvault-backend.ts');
    return new AzureKeyVaultBackend(config, deps);
  },
};
