// The Entra ID credential a Key Vault backend authenticates with, built from its config:
// the SDK's standard sources (workload identity, managed identity, the default chain) or
// an application's secret or certificate read from the files the config names, never from
// the config itself.
import type { Agent } from 'node:https';
import {
  ClientCertificateCredential,
  ClientSecretCredential,
  DefaultAzureCredential,
  ManagedIdentityCredential,
  WorkloadIdentityCredential,
  type TokenCredential,
  type TokenCredentialOptions,
} from '@azure/identity';
import type { AzureCredentialConfig } from './azure-keyvault-schema.ts';
import type { SecretReader } from '../../secrets.ts';

export function createAzureCredential(
  config: AzureCredentialConfig,
  deps: { readSecret: SecretReader; backend: string; agent: Agent },
): TokenCredential {
  const options: TokenCredentialOptions & { disableInstanceDiscovery?: boolean } = {
    agent: deps.agent,
    // Token requests run inside a Key Vault call, whose retries (within its deadline) are ours.
    retryOptions: { maxRetries: 0 },
    // A configured authority is trusted as is: sovereign clouds, Azure Stack, private ones.
    ...(config.authorityHost !== undefined && {
      authorityHost: config.authorityHost,
      disableInstanceDiscovery: true,
    }),
  };
  const what = (secret: string) => `backend ${deps.backend} Azure ${secret}`;
  switch (config.type) {
    case 'client-secret':
      return new ClientSecretCredential(
        config.tenantId ?? '',
        config.clientId ?? '',
        deps.readSecret({ file: config.clientSecretFile }, what('client secret')),
        options,
      );
    case 'client-certificate':
      return new ClientCertificateCredential(
        config.tenantId ?? '',
        config.clientId ?? '',
        { certificate: deps.readSecret({ file: config.certificateFile }, what('client certificate')) },
        options,
      );
    case 'workload-identity':
      // Unset values come from the AZURE_* variables the workload identity webhook injects;
      // the token file is re-read by the SDK, as the kubelet rotates it.
      return new WorkloadIdentityCredential({
        ...options,
        ...(config.tenantId !== undefined && { tenantId: config.tenantId }),
        ...(config.clientId !== undefined && { clientId: config.clientId }),
        ...(config.tokenFile !== undefined && { tokenFilePath: config.tokenFile }),
      });
    case 'managed-identity':
      if (config.resourceId !== undefined)
        return new ManagedIdentityCredential({ ...options, resourceId: config.resourceId });
      if (config.clientId !== undefined)
        return new ManagedIdentityCredential({ ...options, clientId: config.clientId });
      return new ManagedIdentityCredential(options);
    case 'default':
      return new DefaultAzureCredential({
        ...options,
        ...(config.tenantId !== undefined && { tenantId: config.tenantId }),
        ...(config.clientId !== undefined && {
          managedIdentityClientId: config.clientId,
          workloadIdentityClientId: config.clientId,
        }),
      });
  }
}
