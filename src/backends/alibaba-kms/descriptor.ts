// The alibaba-kms backend kind: Alibaba Cloud KMS keys.
import type { BackendKind } from '../backend-kind.ts';
import { checkAlibabaKms, alibabaKmsBackendSchema } from './alibaba-kms-schema.ts';

export const alibabaKmsKind: BackendKind<typeof alibabaKmsBackendSchema> = {
  type: 'alibaba-kms',
  schema: alibabaKmsBackendSchema,
  check: checkAlibabaKms,
  files: {
    'credentials.accessKeyIdFile': 'secret',
    'credentials.accessKeySecretFile': 'secret',
    'credentials.securityTokenFile': 'secret',
  },
  async create(config, deps) {
    const { AlibabaKmsBackend } = await import('./alibaba-kms-backend.ts');
    return new AlibabaKmsBackend(config, deps);
  },
};
