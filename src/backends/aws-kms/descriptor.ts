// The aws-kms backend kind: AWS KMS symmetric keys, by alias or key id.
import type { BackendKind } from '../backend-kind.ts';
import { checkAwsKms, awsKmsBackendSchema } from './aws-kms-schema.ts';

export const awsKmsKind: BackendKind<typeof awsKmsBackendSchema> = {
  type: 'aws-kms',
  schema: awsKmsBackendSchema,
  check: checkAwsKms,
  files: { credentialsFile: 'secret' },
  async create(config, deps) {
    const { AwsKmsBackend } = await import('./aws-kms-backend.ts');
    return new AwsKmsBackend(config, deps);
  },
};
