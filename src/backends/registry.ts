// Backend kinds by config `type`. A new backend is one module plus one case here.
import type { BackendConfig } from '../config/schema.ts';
import type { SecretReader } from '../config/secrets.ts';
import type { Logger } from '../log.ts';
import { AlibabaKmsBackend } from './alibaba-kms/alibaba-kms-backend.ts';
import { AwsKmsBackend } from './aws-kms/aws-kms-backend.ts';
import { AzureKeyVaultBackend } from './azure-keyvault/azure-keyvault-backend.ts';
import { GcpKmsBackend } from './gcp-kms/gcp-kms-backend.ts';
import type { KekBackend } from './kek.ts';
import { Pkcs11Backend } from './pkcs11/pkcs11-backend.ts';
import { VaultTransitBackend } from './vault-transit/vault-transit-backend.ts';

export interface BackendDeps {
  readonly readSecret: SecretReader;
  readonly logger: Logger;
}

export function createBackend(config: BackendConfig, deps: BackendDeps): KekBackend {
  switch (config.type) {
    case 'pkcs11':
      return new Pkcs11Backend(config, deps);
    case 'vault-transit':
      return new VaultTransitBackend(config, deps);
    case 'aws-kms':
      return new AwsKmsBackend(config, deps);
    case 'azure-keyvault':
      return new AzureKeyVaultBackend(config, deps);
    case 'alibaba-kms':
      return new AlibabaKmsBackend(config, deps);
    case 'gcp-kms':
      return new GcpKmsBackend(config, deps);
  }
}

export function createBackends(
  configs: readonly BackendConfig[],
  deps: BackendDeps,
): Map<string, KekBackend> {
  return new Map(configs.map(config => [config.name, createBackend(config, deps)]));
}
