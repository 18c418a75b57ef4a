// The gcp-kms backend's configuration: defaults, and what is refused, each a CONFIG_INVALID
// that names the key to fix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.ts';
import type { GcpKmsBackendConfig } from '../../src/backends/gcp-kms/gcp-kms-schema.ts';
import { brokerError } from './expect-error.ts';

const KEY = 'projects/my-project/locations/europe-west1/keyRings/kms-broker/cryptoKeys/kek';

function withBackend(backend: Record<string, unknown>) {
  return validateConfig({
    socket: '/run/kms-broker/kms.sock',
    state: { path: '/var/lib/kms-broker/state.json' },
    backends: [{ name: 'gcp', type: 'gcp-kms', keyName: KEY, ...backend }],
    failover: { order: ['gcp'] },
  });
}

describe('gcp-kms backend config', () => {
  it('fills in defaults: Application Default Credentials, no key creation, bounded requests', () => {
    const backend = withBackend({}).backends[0] as GcpKmsBackendConfig;
    assert.equal(backend.credentialsFile, undefined);
    assert.equal(backend.endpoint, undefined);
    assert.equal(backend.createIfMissing, false);
    assert.equal(backend.requestTimeoutMs, 2000);
    assert.equal(backend.maxConcurrency, 32);
    assert.deepEqual(backend.rotationPoll, { intervalMs: 30000, stableForMs: 60000 });
  });

  it('accepts a credentials file and a private endpoint', () => {
    const backend = withBackend({
      credentialsFile: '/etc/kms-broker/gcp.json',
      endpoint: 'https://cloudkms.p.googleapis.com:443',
    }).backends[0] as GcpKmsBackendConfig;
    assert.equal(backend.endpoint, 'https://cloudkms.p.googleapis.com:443');
  });

  const invalid: [what: string, backend: Record<string, unknown>, expected: string][] = [
    [
      'a key ring instead of a key',
      { keyName: KEY.replace(/\/cryptoKeys\/kek$/, '') },
      'backends[0].keyName',
    ],
    ['a key version instead of a key', { keyName: `${KEY}/cryptoKeyVersions/1` }, 'backends[0].keyName'],
    ['a relative credentials file', { credentialsFile: 'gcp.json' }, 'backends[0].credentialsFile'],
    [
      'credentials written into the config',
      { credentials: { private_key: 'x' } },
      'backends[0].credentials: unknown key',
    ],
    ['an endpoint with a path', { endpoint: 'https://kms.example/v1' }, 'backends[0].endpoint'],
    ['a plain-text endpoint', { endpoint: 'http://127.0.0.1:9090' }, 'credentials are only sent over TLS'],
    ['a private CA without a private endpoint', { caFile: '/etc/ca.pem' }, 'backends[0].caFile'],
  ];
  for (const [what, backend, expected] of invalid) {
    it(`refuses ${what}`, () => {
      assert.throws(() => withBackend(backend), brokerError('CONFIG_INVALID', expected));
    });
  }
});
