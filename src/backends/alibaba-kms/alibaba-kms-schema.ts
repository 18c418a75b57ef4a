import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  endpointSchema,
  remoteServiceFields,
  strict,
  type RuleViolation,
} from '../config-schema.ts';

export const alibabaKmsBackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('alibaba-kms'),
    /** e.g. cn-hangzhou; picks the endpoint kms.<regionId>.aliyuncs.com unless `endpoint` is set. */
    regionId: Type.String({ pattern: '^[a-z]{2,}(-[a-z0-9]+){1,4}$' }),
    /** The key's ID (a UUID or key-...) or an alias (alias/...); an alias is resolved once at start. */
    keyId: Type.String({ minLength: 1, maxLength: 256, pattern: '^[A-Za-z0-9:/_.-]+$' }),
    /** A VPC or private endpoint (https://kms-vpc.cn-hangzhou.aliyuncs.com), or a test server. */
    endpoint: Type.Optional(endpointSchema),
    /**
     * AccessKey pair (and STS token) read from files, re-read once a minute at most.
     * Without it the SDK's default chain applies: environment, OIDC (RRSA), CLI profile,
     * credentials file, ECS RAM role.
     */
    credentials: Type.Optional(
      Type.Object(
        {
          accessKeyIdFile: absolutePath,
          accessKeySecretFile: absolutePath,
          securityTokenFile: Type.Optional(absolutePath),
        },
        strict,
      ),
    ),
    ...remoteServiceFields,
  },
  strict,
);
export type AlibabaKmsBackendConfig = Static<typeof alibabaKmsBackendSchema>;

export function checkAlibabaKms(config: AlibabaKmsBackendConfig): RuleViolation | undefined {
  // Plain HTTP would carry plaintext seeds in the clear; only a loopback test server may use it.
  const endpoint = config.endpoint;
  if (
    endpoint?.startsWith('http://') === true &&
    !/^http:\/\/(127\.\d+\.\d+\.\d+|\[::1\]|localhost)(:\d+)?$/.test(endpoint)
  ) {
    return {
      path: 'endpoint',
      message: 'plain http is allowed only for a loopback test server; use https://',
    };
  }
  return undefined;
}
