// How the usage scan reads one stored value and its key: the format, whose the KMS ciphertext
// is, the backend key versions of the broker's envelopes, and the resource it belongs to.
// Total: any bytes give an answer.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { encodeWrapSet } from '../../src/grpc/wrap-set.ts';
import { resourceOf } from '../../src/usage/resource-name.ts';
import { decodeStoredValue } from '../../src/usage/stored-format.ts';
import {
  brokerEnvelopes,
  brokerKeyId,
  brokerV1Value,
  brokerV2Value,
  identityValue,
  kmsV1Value,
  kmsV2Value,
  localValue,
} from '../helpers/stored-values.ts';

const keyId = brokerKeyId('one');

describe('usage scan: stored formats', () => {
  it('reads a KMS v2 value of the broker with one wrap down to its backend key version', () => {
    const stored = decodeStoredValue(brokerV2Value([{ backend: 'hsm', version: '3' }], keyId));
    assert.deepEqual(stored, {
      format: 'kms-v2',
      provider: 'kms-broker',
      keyId,
      ownership: { owner: 'broker', wraps: [{ backend: 'hsm', version: '3' }] },
    });
  });

  it('reads the further wraps of a KMS v2 value from its annotations, sorted by backend', () => {
    const value = brokerV2Value(
      [
        { backend: 'vault', version: '7' },
        { backend: 'hsm', version: '2' },
      ],
      keyId,
    );
    const stored = decodeStoredValue(value);
    assert.equal(stored.format, 'kms-v2');
    assert.deepEqual(stored.format === 'kms-v2' && stored.ownership, {
      owner: 'broker',
      wraps: [
        { backend: 'hsm', version: '2' },
        { backend: 'vault', version: '7' },
      ],
    });
  });

  it('ignores annotations that are not wraps, and refuses wraps of different envelopes', () => {
    const [first, second] = brokerEnvelopes([
      { backend: 'hsm', version: '1' },
      { backend: 'vault', version: '1' },
    ]);
    const [, foreignSecond] = brokerEnvelopes([
      { backend: 'hsm', version: '1' },
      { backend: 'vault', version: '1' },
    ]);
    const withOther = kmsV2Value('kms-broker', {
      keyId,
      ciphertext: first as Buffer,
      annotations: {
        'audit.example.com': Buffer.from('x'),
        [`vault${WRAP_ANNOTATION_SUFFIX}`]: second as Buffer,
      },
    });
    const stored = decodeStoredValue(withOther);
    assert.deepEqual(stored.format === 'kms-v2' && stored.ownership.owner, 'broker');
    const spliced = kmsV2Value('kms-broker', {
      keyId,
      ciphertext: first as Buffer,
      annotations: { [`vault${WRAP_ANNOTATION_SUFFIX}`]: foreignSecond as Buffer },
    });
    const splicedStored = decodeStoredValue(spliced);
    assert.deepEqual(splicedStored.format === 'kms-v2' && splicedStored.ownership, {
      owner: 'broker-undecodable',
    });
  });

  it('reads a KMS v1 value of the broker (a wrap set in the DEK ciphertext)', () => {
    const stored = decodeStoredValue(
      brokerV1Value([
        { backend: 'hsm', version: '1' },
        { backend: 'vault', version: '4' },
      ]),
    );
    assert.deepEqual(stored, {
      format: 'kms-v1',
      provider: 'kms-broker',
      ownership: {
        owner: 'broker',
        wraps: [
          { backend: 'hsm', version: '1' },
          { backend: 'vault', version: '4' },
        ],
      },
    });
  });

  it("tells another plugin's KMS values from the broker's, keeping their key_id", () => {
    const foreignV2 = kmsV2Value('aws', {
      keyId: 'arn:aws:kms:eu-west-1:1:key/abc',
      ciphertext: randomBytes(184),
    });
    assert.deepEqual(decodeStoredValue(foreignV2), {
      format: 'kms-v2',
      provider: 'aws',
      keyId: 'arn:aws:kms:eu-west-1:1:key/abc',
      ownership: { owner: 'other' },
    });
    assert.deepEqual(decodeStoredValue(kmsV1Value('vault-v1', randomBytes(90))), {
      format: 'kms-v1',
      provider: 'vault-v1',
      ownership: { owner: 'other' },
    });
  });

  it("marks values that claim to be the broker's but do not decode as undecodable", () => {
    // The broker's key_id shape with a ciphertext that is no envelope.
    const badCiphertext = kmsV2Value('kms-broker', { keyId, ciphertext: randomBytes(80) });
    // The envelope magic with a damaged envelope behind it.
    const damaged = kmsV2Value('kms-broker', {
      keyId: 'whatever',
      ciphertext: Buffer.concat([Buffer.from('kbr\x03', 'latin1'), randomBytes(40)]),
    });
    const v1Damaged = kmsV1Value(
      'kms-broker',
      Buffer.concat([Buffer.from('kbr\x02', 'latin1'), randomBytes(30)]),
    );
    const v1BadWrap = kmsV1Value('kms-broker', encodeWrapSet([randomBytes(50)]));
    for (const value of [badCiphertext, damaged, v1Damaged, v1BadWrap]) {
      const stored = decodeStoredValue(value);
      assert.ok(stored.format === 'kms-v2' || stored.format === 'kms-v1');
      assert.deepEqual(stored.ownership, { owner: 'broker-undecodable' });
    }
  });

  it('counts a KMS value whose EncryptedObject or length prefix is broken as nobody’s', () => {
    const garbled = Buffer.concat([
      Buffer.from('k8s:enc:kms:v2:kms-broker:', 'latin1'),
      Buffer.from([0xff, 0xff]),
    ]);
    assert.deepEqual(decodeStoredValue(garbled), {
      format: 'kms-v2',
      provider: 'kms-broker',
      ownership: { owner: 'other' },
    });
    const shortV1 = Buffer.concat([Buffer.from('k8s:enc:kms:v1:p:', 'latin1'), Buffer.from([0x10, 0x00, 1])]);
    assert.deepEqual(decodeStoredValue(shortV1), {
      format: 'kms-v1',
      provider: 'p',
      ownership: { owner: 'other' },
    });
  });

  it('counts aescbc, aesgcm and secretbox by kind, and everything else as identity', () => {
    for (const kind of ['aescbc', 'aesgcm', 'secretbox'] as const)
      assert.deepEqual(decodeStoredValue(localValue(kind)), { format: kind });
    for (const value of [
      identityValue(),
      Buffer.from('{"kind":"Lease"}'),
      Buffer.alloc(0),
      Buffer.from('k8s:enc:kms:v2:'),
      Buffer.from('k8s:enc:kms:v2:no-colon-after-the-name'),
      Buffer.from('k8s:enc:future:v1:key:data'),
    ])
      assert.deepEqual(decodeStoredValue(value), { format: 'identity' });
  });

  it('answers for any bytes (fuzz)', () => {
    const prefixes = ['', 'k8s:enc:kms:v2:p:', 'k8s:enc:kms:v1:p:', 'k8s:enc:kms:v2:p:\x12\x04kbr\x03'];
    for (let round = 0; round < 2000; round++) {
      const prefix = prefixes[round % prefixes.length] as string;
      const value = Buffer.concat([Buffer.from(prefix, 'latin1'), randomBytes(round % 300)]);
      const stored = decodeStoredValue(value);
      assert.ok(typeof stored.format === 'string');
    }
  });
});

describe('usage scan: resource names', () => {
  const cases: [string, string][] = [
    ['/registry/secrets/default/db', 'secrets'],
    ['/registry/configmaps/kube-system/x', 'configmaps'],
    ['/registry/namespaces/default', 'namespaces'],
    ['/registry/services/specs/default/kubernetes', 'services'],
    ['/registry/services/endpoints/default/kubernetes', 'endpoints'],
    ['/registry/minions/node-1', 'nodes'],
    ['/registry/controllers/default/rc', 'replicationcontrollers'],
    ['/registry/ingress/default/web', 'ingresses.networking.k8s.io'],
    ['/registry/deployments/default/web', 'deployments'],
    ['/registry/example.com/widgets/default/w1', 'widgets.example.com'],
    ['/registry/example.com/clusterwidgets/w1', 'clusterwidgets.example.com'],
    [
      '/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com',
      'customresourcedefinitions.apiextensions.k8s.io',
    ],
    ['/registry/apiregistration.k8s.io/apiservices/v1.apps', 'apiservices.apiregistration.k8s.io'],
    ['/registry/masterleases/10.0.0.1', 'masterleases'],
    ['/registry/', '(none)'],
    ['/registry//x', '(none)'],
  ];
  for (const [key, resource] of cases)
    it(`names ${key} ${resource}`, () => assert.equal(resourceOf(key, '/registry/'), resource));

  it('reads keys under another prefix the same way', () => {
    assert.equal(resourceOf('/cluster-a/secrets/ns/name', '/cluster-a/'), 'secrets');
  });

  it('bounds a resource name to 253 characters', () => {
    assert.equal(resourceOf(`/registry/${'a'.repeat(400)}/x`, '/registry/').length, 253);
  });
});
