// Values as kube-apiserver stores them in etcd, built byte for byte: KMS v2 (EncryptedObject),
// KMS v1, the local AES kinds and identity, with broker envelopes made by the broker's own
// codec. The data parts are random bytes unless a test gives real ones (kube-encrypt.ts).
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { bindingFor, encodeEnvelope, headerAad, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { encodeWrapSet } from '../../src/grpc/wrap-set.ts';

const EncryptedObject = new protobuf.Root()
  .loadSync(fileURLToPath(new URL('../../proto/kms-v2-encrypted-object.proto', import.meta.url)), {
    keepCase: true,
  })
  .lookupType('v2.EncryptedObject');

export interface Wrap {
  readonly backend: string;
  readonly version: string;
}

/** Broker envelopes of one seed, bound together as Encrypt binds them; the first is the ciphertext. */
export function brokerEnvelopes(wraps: readonly Wrap[]): Buffer[] {
  const binding = bindingFor(randomBytes(32));
  return wraps.map(wrap =>
    encodeEnvelope(
      headerAad({ backend: wrap.backend, keyVersion: wrap.version, mechanism: 'aes-gcm', binding }),
      randomBytes(60),
    ),
  );
}

export interface KmsV2Parts {
  readonly keyId: string;
  readonly ciphertext: Buffer;
  readonly annotations?: Readonly<Record<string, Buffer>>;
  /** Data a drill can decrypt (test/helpers/kube-encrypt.ts); random bytes by default. */
  readonly encryptedData?: Buffer;
}

/** "k8s:enc:kms:v2:<provider>:" || EncryptedObject, with a KDF-seed data part. */
export function kmsV2Value(provider: string, parts: KmsV2Parts): Buffer {
  const object = EncryptedObject.encode(
    EncryptedObject.fromObject({
      encryptedData: parts.encryptedData ?? randomBytes(32 + 12 + 40 + 16),
      keyID: parts.keyId,
      encryptedDEKSource: parts.ciphertext,
      annotations: parts.annotations ?? {},
      encryptedDEKSourceType: 1,
    }),
  ).finish();
  return Buffer.concat([Buffer.from(`k8s:enc:kms:v2:${provider}:`, 'latin1'), object]);
}

/** A KMS v2 value whose seed the broker wrapped under `wraps` (the first in the ciphertext). */
export function brokerV2Value(wraps: readonly Wrap[], keyId: string, provider = 'kms-broker'): Buffer {
  const [first, ...others] = brokerEnvelopes(wraps);
  const annotations = Object.fromEntries(
    others.map((envelope, index) => [`${wraps[index + 1]?.backend}${WRAP_ANNOTATION_SUFFIX}`, envelope]),
  );
  return kmsV2Value(provider, { keyId, ciphertext: first as Buffer, annotations });
}

/** "k8s:enc:kms:v1:<provider>:" || uint16 BE len || DEK ciphertext || data. */
export function kmsV1Value(provider: string, dekCiphertext: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(dekCiphertext.length);
  return Buffer.concat([
    Buffer.from(`k8s:enc:kms:v1:${provider}:`, 'latin1'),
    length,
    dekCiphertext,
    randomBytes(12 + 40 + 16),
  ]);
}

/** A KMS v1 value whose DEK the broker's v1 service wrapped under `wraps`. */
export function brokerV1Value(wraps: readonly Wrap[], provider = 'kms-broker'): Buffer {
  return kmsV1Value(provider, encodeWrapSet(brokerEnvelopes(wraps)));
}

export function localValue(kind: 'aescbc' | 'aesgcm' | 'secretbox', keyName = 'key1'): Buffer {
  return Buffer.concat([Buffer.from(`k8s:enc:${kind}:v1:${keyName}:`, 'latin1'), randomBytes(64)]);
}

/** Kubernetes' own protobuf encoding, unencrypted. */
export function identityValue(): Buffer {
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), randomBytes(48)]);
}

/** A key_id of the shape the broker issues. */
export function brokerKeyId(tag: string): string {
  return `kbr1-${Buffer.from(tag.padEnd(32, '.')).toString('base64url').slice(0, 43).padEnd(43, 'A')}`;
}
