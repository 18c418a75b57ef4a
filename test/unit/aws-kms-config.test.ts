// The aws-kms backend's configuration: defaults, and the rules a schema cannot express, each
// a CONFIG_INVALID that names the key to fix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.ts';
import type { AwsKmsBackendConfig } from '../../src/backends/aws-kms/aws-kms-schema.ts';
import { brokerError } from './expect-error.ts';

const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab';
const KEY_ARN = `arn:aws:kms:eu-west-1:111122223333:key/${KEY_ID}`;

function withBackend(backend: Record<string, unknown>) {
  return validateConfig({
    socket: '/run/kms-broker/kms.sock',
    state: { path: '/var/lib/kms-broker/state.json' },
    backends: [{ name: 'aws', type: 'aws-kms', region: 'eu-west-1', key: 'alias/kek', ...backend }],
    failover: { order: ['aws'] },
  });
}

describe('aws-kms backend config', () => {
  it('fills in defaults: no key creation, no rotation through the broker, bounded requests', () => {
    const backend = withBackend({}).backends[0] as AwsKmsBackendConfig;
    assert.equal(backend.createIfMissing, false);
    assert.deepEqual(backend.rotation, { createKeys: false, keys: [] });
    assert.equal(backend.requestTimeoutMs, 2000);
    assert.equal(backend.maxConcurrency, 32);
    assert.deepEqual(backend.rotationPoll, { intervalMs: 30000, stableForMs: 60000 });
  });

  it('accepts every form of key reference', () => {
    for (const key of [
      KEY_ID,
      KEY_ARN,
      'mrk-1234abcd12ab34cd56ef1234567890ab',
      'alias/kms-broker/kek',
      'arn:aws:kms:eu-west-1:111122223333:alias/kek',
      'arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/kek',
    ]) {
      assert.equal((withBackend({ key }).backends[0] as AwsKmsBackendConfig).key, key);
    }
  });

  const invalid: [what: string, backend: Record<string, unknown>, expected: string][] = [
    ['a key that is no key reference', { key: 'kek' }, 'backends[0].key: must match pattern'],
    ['a region that is no region', { region: 'Frankfurt' }, 'backends[0].region: must match pattern'],
    ['an endpoint with a path', { endpoint: 'https://kms.example/v1' }, 'backends[0].endpoint'],
    ['a relative credentials file', { credentialsFile: 'aws/credentials' }, 'backends[0].credentialsFile'],
    ['credentials written into the config', { accessKeyId: 'AKIA' }, 'backends[0].accessKeyId: unknown key'],
    [
      'creating keys without an alias',
      { key: KEY_ARN, rotation: { createKeys: true } },
      'backends[0].key: rotation.createKeys and createIfMissing need an alias',
    ],
    ['createIfMissing without an alias', { key: KEY_ID, createIfMissing: true }, 'need an alias as key'],
    [
      'an alias among the listed keys',
      { rotation: { keys: [KEY_ID, 'alias/other'] } },
      'backends[0].rotation.keys: list keys by id or ARN, not by alias',
    ],
  ];
  for (const [what, backend, expected] of invalid) {
    it(`refuses ${what}`, () => {
      assert.throws(() => withBackend(backend), brokerError('CONFIG_INVALID', expected));
    });
  }
});
