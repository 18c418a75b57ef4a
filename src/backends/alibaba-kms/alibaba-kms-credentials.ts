// Where the broker's Alibaba Cloud credentials come from: the SDK's default chain
// (environment, OIDC/RRSA, CLI profile, credentials file, ECS RAM role), or an AccessKey
// pair (and STS token) in files named by the config. Files are re-read now and then, so a
// rotated Kubernetes Secret is picked up without a restart.
import credentials from '@alicloud/credentials';
import type { AlibabaKmsBackendConfig } from './alibaba-kms-schema.ts';
import type { SecretReader } from '../../secrets.ts';

export type AlibabaCredential = InstanceType<typeof credentials.default>;

const REREAD_AFTER_MS = 60000;

export function createAlibabaCredential(
  config: AlibabaKmsBackendConfig,
  readSecret: SecretReader,
): AlibabaCredential {
  const files = config.credentials;
  if (files === undefined) return new credentials.default();
  const what = `backend ${config.name} Alibaba Cloud`;
  let cached: { value: AlibabaKeys; readAt: number } | undefined;
  const provider = {
    getProviderName: () => 'kms-broker-files',
    getCredentials: () => {
      if (cached === undefined || Date.now() - cached.readAt > REREAD_AFTER_MS) {
        cached = {
          readAt: Date.now(),
          value: {
            accessKeyId: readSecret({ file: files.accessKeyIdFile }, `${what} AccessKey ID`),
            accessKeySecret: readSecret({ file: files.accessKeySecretFile }, `${what} AccessKey secret`),
            securityToken:
              files.securityTokenFile === undefined
                ? ''
                : readSecret({ file: files.securityTokenFile }, `${what} STS token`),
            providerName: 'kms-broker-files',
          },
        };
      }
      return Promise.resolve(cached.value);
    },
  };
  return new credentials.default(null, provider);
}

interface AlibabaKeys {
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly securityToken: string;
  readonly providerName: string;
}
