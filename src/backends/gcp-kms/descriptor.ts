// The gcp-kms backend kind: Google Cloud KMS CryptoKeys.
import type { BackendKind } from '../backend-kind.ts';
import { checkGcpKms, gcpKmsBackendSchema } from './gcp-kms-schema.ts';

export const gcpKmsKind: BackendKind<typeof gcpKmsBackendSchema> = {
  type: 'gcp-kms',
  schema: gcpKmsBackendSchema,
  check: checkGcpKms,
  files: { caFile: 'pem-certificates', credentialsFile: 'json-credentials' },
  async create(config, deps) {
    const { GcpKmsBackend } = await import('./gcp-kms-backend.ts');
    return new GcpKmsBackend(config, deps);
  },
};
