import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  checkVariantKeys,
  remoteServiceFields,
  strict,
  type RuleViolation,
  type VariantKeys,
} from '../config-schema.ts';

/** Entra ID tenants and application (client) ids are GUIDs; a tenant may also be a domain name. */
const tenantId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$' });
const clientId = Type.String({ pattern: '^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$' });

const azureCredentialTypes = [
  'default',
  'workload-identity',
  'managed-identity',
  'client-secret',
  'client-certificate',
] as const;
export type AzureCredentialType = (typeof azureCredentialTypes)[number];

const azureCredentialSchema = Type.Object(
  {
    type: Type.Union(azureCredentialTypes.map(type => Type.Literal(type))),
    tenantId: Type.Optional(tenantId),
    /** The application, the workload identity's client, or a user-assigned managed identity. */
    clientId: Type.Optional(clientId),
    /** A user-assigned managed identity by its ARM resource id. */
    resourceId: Type.Optional(Type.String({ pattern: '^/subscriptions/[^\\s]+$', maxLength: 1024 })),
    clientSecretFile: Type.Optional(absolutePath),
    /** PEM file with the certificate and its private key. */
    certificateFile: Type.Optional(absolutePath),
    /** The projected service-account token (default: AZURE_FEDERATED_TOKEN_FILE). */
    tokenFile: Type.Optional(absolutePath),
    /** Entra ID endpoint for sovereign clouds or Azure Stack; instance discovery is then off. */
    authorityHost: Type.Optional(Type.String({ pattern: '^https://[^/?#]+$' })),
  },
  strict,
);
export type AzureCredentialConfig = Static<typeof azureCredentialSchema>;

const azureKeyAlgorithms = ['RSA-OAEP-256', 'A256KW'] as const;

export const azureKeyVaultBackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('azure-keyvault'),
    /** https://<vault>.vault.azure.net or https://<hsm>.managedhsm.azure.net (or a private endpoint). */
    vaultUrl: Type.String({ pattern: '^https://[^/?#]+$' }),
    keyName: Type.String({ pattern: '^[0-9A-Za-z-]{1,127}$' }),
    /** RSA-OAEP-256 with an RSA key (vault or HSM); A256KW with an AES key (Managed HSM only). */
    algorithm: Type.Union(
      azureKeyAlgorithms.map(algorithm => Type.Literal(algorithm)),
      { default: 'RSA-OAEP-256' },
    ),
    /** Size of RSA keys the broker creates (RSA-OAEP-256 only): the wrap is this many bits long. */
    rsaKeySize: Type.Union([Type.Literal(2048), Type.Literal(3072), Type.Literal(4096)], { default: 3072 }),
    /** Keys the broker creates are HSM-protected (RSA-HSM); always so for A256KW. */
    hsm: Type.Boolean({ default: false }),
    /** Key Vault REST API version; set only for services that lag the SDK's default. */
    apiVersion: Type.Optional(
      Type.String({ pattern: '^(7\\.[0-9]|[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?)$' }),
    ),
    tls: Type.Optional(
      Type.Object(
        {
          /** CA that signs the vault's (and authorityHost's) certificate: private endpoints, tests. */
          caFile: Type.Optional(absolutePath),
        },
        strict,
      ),
    ),
    /**
     * Key Vault's 401 challenge names the resource a token is for; the SDK checks that it
     * matches the vault's host. Only an emulator on a bare host name needs this off.
     */
    verifyChallengeResource: Type.Boolean({ default: true }),
    ...remoteServiceFields,
    createIfMissing: Type.Boolean({ default: false }),
    credential: azureCredentialSchema,
  },
  strict,
);
export type AzureKeyVaultBackendConfig = Static<typeof azureKeyVaultBackendSchema>;

/** Which credential keys each type needs, and which it can use. */
const credentialKeys: Record<AzureCredentialType, VariantKeys> = {
  default: { required: [], allowed: ['tenantId', 'clientId'] },
  'workload-identity': { required: [], allowed: ['tenantId', 'clientId', 'tokenFile', 'authorityHost'] },
  'managed-identity': { required: [], allowed: ['clientId', 'resourceId'] },
  'client-secret': {
    required: ['tenantId', 'clientId', 'clientSecretFile'],
    allowed: ['tenantId', 'clientId', 'clientSecretFile', 'authorityHost'],
  },
  'client-certificate': {
    required: ['tenantId', 'clientId', 'certificateFile'],
    allowed: ['tenantId', 'clientId', 'certificateFile', 'authorityHost'],
  },
};

export function checkAzureKeyVault(config: AzureKeyVaultBackendConfig): RuleViolation | undefined {
  const { credential } = config;
  const violation = checkVariantKeys(
    credential,
    { path: 'credential', tag: 'type', noun: 'credential type' },
    credentialKeys[credential.type],
  );
  if (violation !== undefined) return violation;
  if (credential.clientId !== undefined && credential.resourceId !== undefined) {
    return { path: 'credential', message: 'set at most one of clientId and resourceId' };
  }
  if (config.algorithm === 'A256KW' && !/\.managedhsm\./.test(config.vaultUrl) && !config.hsm) {
    return {
      path: 'algorithm',
      message:
        'A256KW needs AES keys, which only Managed HSM holds; set hsm: true for a Managed HSM private endpoint',
    };
  }
  return undefined;
}
