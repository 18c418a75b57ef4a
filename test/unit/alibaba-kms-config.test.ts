// The alibaba-kms backend's configuration: defaults, and the mistakes it refuses with the
// path of the offending key.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.ts';
import type { AlibabaKmsBackendConfig } from '../../src/backends/alibaba-kms/alibaba-kms-schema.ts';
import { brokerError } from './expect-error.ts';

function withBackend(backend: Record<string, unknown>): Record<string, unknown> {
  return {
    socket: '/run/kms-broker/kms.sock',
    state: { path: '/var/lib/kms-broker/state.json' },
    backends: [{ name: 'ali', type: 'alibaba-kms', regionId: 'cn-hangzhou', keyId: 'alias/kek', ...backend }],
    failover: { order: ['ali'] },
  };
}

describe('alibaba-kms configuration', () => {
  it('fills in the defaults: default credential chain, shared endpoint, bounded concurrency', () => {
    const backend = validateConfig(withBackend({})).backends[0] as AlibabaKmsBackendConfig;
    assert.equal(backend.credentials, undefined);
    assert.equal(backend.endpoint, undefined);
    assert.equal(backend.requestTimeoutMs, 2000);
    assert.equal(backend.maxConcurrency, 32);
    assert.deepEqual(backend.rotationPoll, { intervalMs: 30000, stableForMs: 60000 });
  });

  it('accepts credential files and an https endpoint', () => {
    const backend = validateConfig(
      withBackend({
        endpoint: 'https://kms-vpc.cn-hangzhou.aliyuncs.com',
        credentials: { accessKeyIdFile: '/etc/kms-broker/id', accessKeySecretFile: '/etc/kms-broker/secret' },
      }),
    ).backends[0] as AlibabaKmsBackendConfig;
    assert.equal(backend.credentials?.accessKeySecretFile, '/etc/kms-broker/secret');
  });

  it('refuses a secret written in the config: only files are credential keys', () => {
    assert.throws(
      () => validateConfig(withBackend({ credentials: { accessKeyId: 'LTAI', accessKeySecret: 'literal' } })),
      brokerError('CONFIG_INVALID', 'backends[0].credentials'),
    );
  });

  it('refuses plain http except to a loopback test server', () => {
    assert.throws(
      () => validateConfig(withBackend({ endpoint: 'http://kms.cn-hangzhou.aliyuncs.com' })),
      brokerError('CONFIG_INVALID', /backends\[0\]\.endpoint.*plain http/),
    );
    assert.doesNotThrow(() => validateConfig(withBackend({ endpoint: 'http://127.0.0.1:8080' })));
  });

  it('refuses a malformed region and an unknown key', () => {
    assert.throws(
      () => validateConfig(withBackend({ regionId: 'Hangzhou 1' })),
      brokerError('CONFIG_INVALID', 'backends[0].regionId'),
    );
    assert.throws(
      () => validateConfig(withBackend({ keyID: 'typo' })),
      brokerError('CONFIG_INVALID', 'backends[0].keyID'),
    );
  });
});
