// Backend kinds by config `type`. A new backend is one module plus one case here.
import type { BackendConfig } from '../config/schema.ts';
import type { SecretReader } from '../secrets.ts';
import type { Logger } from '../log.ts';
import type { KekBackend } from './kek.ts';

export interface BackendDeps {
  readonly readSecret: SecretReader;
  readonly logger: Logger;
}

/**
 * Builds one backend. Each kind's module (and its SDK) loads only when a backend of that kind
 * is configured: the four cloud SDKs together cost over a second of start-up, paid on every
 * restart by brokers that use none of them.
 */
export async function createBackend(config: BackendConfig, deps: BackendDeps): Promise<KekBackend> {
  switch (config.type) {
    case 'pkcs11':
      return new (await import('./pkcs11/pkcs11-backend.ts')).Pkcs11Backend(config, deps);
    case 'vault-transit':
      return new (await import('./vault-transit/vault-transit-backend.ts')).VaultTransitBackend(config, deps);
    case 'aws-kms':
      return new (await import('./aws-kms/aws-kms-backend.ts')).AwsKmsBackend(config, deps);
    case 'azure-keyvault':
      return new (await import('./azure-keyvault/azure-keyvault-backend.ts')).AzureKeyVaultBackend(
        config,
        deps,
      );
    case 'alibaba-kms':
      return new (await import('./alibaba-kms/alibaba-kms-backend.ts')).AlibabaKmsBackend(config, deps);
    case 'gcp-kms':
      return new (await import('./gcp-kms/gcp-kms-backend.ts')).GcpKmsBackend(config, deps);
  }
}

export async function createBackends(
  configs: readonly BackendConfig[],
  deps: BackendDeps,
): Promise<Map<string, KekBackend>> {
  const backends = await Promise.all(configs.map(config => createBackend(config, deps)));
  return new Map(backends.map(backend => [backend.name, backend]));
}
