// Azure Key Vault backends for tests, pointed at the in-process emulator and authenticated as
// an operator would set it up: an application whose secret sits in a file beside the config.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AzureKeyVaultEmulator, KeyPermission } from './azure-keyvault-emulator.ts';

/** A registered application with its client secret in a 0600 file under `dir`. */
export function clientSecretCredential(
  emulator: AzureKeyVaultEmulator,
  dir: string,
  options: { permissions?: readonly KeyPermission[]; fileName?: string } = {},
): Record<string, unknown> {
  const secret = randomBytes(18).toString('base64url');
  const clientId = emulator.addClient(secret, options.permissions);
  const clientSecretFile = join(dir, options.fileName ?? `client-secret-${clientId}`);
  writeFileSync(clientSecretFile, `${secret}\n`, { mode: 0o600 });
  return {
    type: 'client-secret',
    tenantId: emulator.tenantId,
    clientId,
    clientSecretFile,
    authorityHost: emulator.url,
  };
}

/** An `azure-keyvault` backend named `azure` on the emulator (RSA 2048 keys: quick to create). */
export function azureKeyVaultBackend(
  emulator: AzureKeyVaultEmulator,
  credential: Record<string, unknown>,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name: 'azure',
    type: 'azure-keyvault',
    vaultUrl: emulator.url,
    keyName: 'kek',
    rsaKeySize: 2048,
    createIfMissing: true,
    // The emulator's challenge names https://127.0.0.1:<port>, which no vault host ends with.
    verifyChallengeResource: false,
    tls: { caFile: emulator.caFile },
    credential,
    ...overrides,
  };
}
