// The azure-keyvault backend's configuration: defaults, and the credential rules a schema
// cannot express, each a CONFIG_INVALID that names the key to fix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.ts';
import type { AzureKeyVaultBackendConfig } from '../../src/backends/azure-keyvault/azure-keyvault-schema.ts';
import { brokerError } from './expect-error.ts';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const CLIENT = '00000000-1111-2222-3333-444444444444';

function withBackend(backend: Record<string, unknown>) {
  return validateConfig({
    socket: '/run/kms-broker/kms.sock',
    state: { path: '/var/lib/kms-broker/state.json' },
    backends: [
      {
        name: 'azure',
        type: 'azure-keyvault',
        vaultUrl: 'https://contoso.vault.azure.net',
        keyName: 'kek',
        credential: { type: 'workload-identity' },
        ...backend,
      },
    ],
    failover: { order: ['azure'] },
  });
}

describe('azure-keyvault backend config', () => {
  it('fills in defaults: RSA-OAEP-256 on 3072-bit keys, no key creation, bounded requests', () => {
    const backend = withBackend({}).backends[0] as AzureKeyVaultBackendConfig;
    assert.equal(backend.algorithm, 'RSA-OAEP-256');
    assert.equal(backend.rsaKeySize, 3072);
    assert.equal(backend.hsm, false);
    assert.equal(backend.createIfMissing, false);
    assert.equal(backend.verifyChallengeResource, true);
    assert.equal(backend.requestTimeoutMs, 2000);
    assert.equal(backend.maxConcurrency, 32);
    assert.deepEqual(backend.rotationPoll, { intervalMs: 30000, stableForMs: 60000 });
  });

  it('accepts each credential type with its keys', () => {
    for (const credential of [
      { type: 'default' },
      {
        type: 'workload-identity',
        tenantId: TENANT,
        clientId: CLIENT,
        tokenFile: '/var/run/secrets/azure/token',
      },
      { type: 'managed-identity', clientId: CLIENT },
      {
        type: 'client-secret',
        tenantId: TENANT,
        clientId: CLIENT,
        clientSecretFile: '/etc/kms-broker/secret',
      },
      {
        type: 'client-certificate',
        tenantId: TENANT,
        clientId: CLIENT,
        certificateFile: '/etc/kms-broker/app.pem',
      },
    ]) {
      assert.doesNotThrow(() => withBackend({ credential }), JSON.stringify(credential));
    }
  });

  it('takes a secret only from a file, never from the config', () => {
    assert.throws(
      () =>
        withBackend({
          credential: { type: 'client-secret', tenantId: TENANT, clientId: CLIENT, clientSecret: 'x' },
        }),
      brokerError('CONFIG_INVALID', 'backends[0].credential'),
    );
    assert.throws(
      () => withBackend({ credential: { type: 'client-secret', tenantId: TENANT, clientId: CLIENT } }),
      brokerError(
        'CONFIG_INVALID',
        'backends[0].credential.clientSecretFile: credential type client-secret needs it',
      ),
    );
  });

  it('names a credential key the chosen type does not use', () => {
    assert.throws(
      () => withBackend({ credential: { type: 'managed-identity', clientSecretFile: '/etc/secret' } }),
      brokerError(
        'CONFIG_INVALID',
        'backends[0].credential.clientSecretFile: not used by credential type managed-identity',
      ),
    );
    assert.throws(
      () =>
        withBackend({
          credential: { type: 'managed-identity', clientId: CLIENT, resourceId: '/subscriptions/x' },
        }),
      brokerError('CONFIG_INVALID', 'set at most one of clientId and resourceId'),
    );
  });

  it('refuses an http vault URL, a path in it, and AES key wrap outside Managed HSM', () => {
    assert.throws(
      () => withBackend({ vaultUrl: 'http://contoso.vault.azure.net' }),
      brokerError('CONFIG_INVALID', 'vaultUrl'),
    );
    assert.throws(
      () => withBackend({ vaultUrl: 'https://contoso.vault.azure.net/keys' }),
      brokerError('CONFIG_INVALID', 'vaultUrl'),
    );
    assert.throws(
      () => withBackend({ algorithm: 'A256KW' }),
      brokerError('CONFIG_INVALID', 'backends[0].algorithm: A256KW needs AES keys'),
    );
    assert.doesNotThrow(() =>
      withBackend({ algorithm: 'A256KW', vaultUrl: 'https://contoso.managedhsm.azure.net' }),
    );
  });
});
