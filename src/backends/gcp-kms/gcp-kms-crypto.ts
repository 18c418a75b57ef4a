// Wrap and unwrap as Cloud KMS Encrypt and Decrypt. Encrypt names the CryptoKeyVersion the
// envelope records, the envelope header goes along as additional authenticated data, and
// CRC32C checksums both ways catch corruption in transit, which is retried, never stored.
import type { protos } from '@google-cloud/kms';
import { BrokerError } from '../../errors.ts';
import { BackendCallError, brokerErrorFor } from '../call-policy.ts';
import type { UnwrapRequest, WrapRequest } from '../kek.ts';
import type { Need } from '../remote-caller.ts';
import { crc32c } from './crc32c.ts';
import type { GcpKmsCaller } from './gcp-kms-client.ts';
import { GCP_KMS_SERVICE as SERVICE } from './gcp-kms-errors.ts';

export const GCP_KMS_MECHANISM = 'gcp-kms';

type Int64Value = protos.google.protobuf.IInt64Value | null | undefined;

/** The key that wraps, and how its requests run: the backend's caller, once it is open. */
export interface CryptoKeyAccess {
  readonly backend: string;
  readonly keyName: string;
  readonly run: GcpKmsCaller['call'];
}

export async function encrypt(key: CryptoKeyAccess, request: WrapRequest): Promise<Buffer> {
  const { backend, keyName } = key;
  const name = `${keyName}/cryptoKeyVersions/${request.keyVersion}`;
  const need: Need = {
    permission: `cloudkms.cryptoKeyVersions.useToEncrypt on ${name}`,
    refine: failure => {
      if (failure.kind === 'not-found') {
        return new BrokerError(
          'KEY_MISSING',
          `backend ${backend}: ${SERVICE} has no key version ${name}`,
          failure.cause,
        );
      }
      return notEnabled(backend, failure, `encrypt with key version ${request.keyVersion}`);
    },
  };
  return key.run(request.deadline, need, async (kms, options) => {
    const [response] = await kms.encrypt(
      {
        name,
        plaintext: request.plaintext,
        plaintextCrc32c: { value: crc32c(request.plaintext) },
        additionalAuthenticatedData: request.aad,
        additionalAuthenticatedDataCrc32c: { value: crc32c(request.aad) },
      },
      options,
    );
    if (response.name !== name) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${backend}: ${SERVICE} encrypted with another key version than ${request.keyVersion}`,
        'VERSION_MISMATCH',
      );
    }
    const ciphertext = Buffer.from(response.ciphertext ?? []);
    const intact =
      response.verifiedPlaintextCrc32c === true &&
      response.verifiedAdditionalAuthenticatedDataCrc32c === true &&
      sameChecksum(response.ciphertextCrc32c, ciphertext);
    if (!intact || ciphertext.length === 0) throw new BackendCallError('unavailable', 'CRC32C_MISMATCH');
    return ciphertext;
  });
}

export async function decrypt(key: CryptoKeyAccess, request: UnwrapRequest): Promise<Buffer> {
  const { backend, keyName } = key;
  if (request.mechanism !== GCP_KMS_MECHANISM) {
    throw new BrokerError(
      'INVALID_CIPHERTEXT',
      `backend ${backend}: the wrapped key is not a ${SERVICE} ciphertext`,
    );
  }
  const need: Need = {
    permission: `cloudkms.cryptoKeyVersions.useToDecrypt on ${keyName}`,
    refine: failure => {
      if (failure.cause === 'GRPC_INVALID_ARGUMENT')
        return brokerErrorFor(new BackendCallError('invalid-ciphertext', failure.cause), {
          backend,
          service: SERVICE,
          permission: '',
        });
      return notEnabled(
        backend,
        failure,
        `decrypt with the key version that wrapped it (${request.keyVersion})`,
      );
    },
  };
  return key.run(request.deadline, need, async (kms, options) => {
    const [response] = await kms.decrypt(
      {
        name: keyName,
        ciphertext: request.wrapped,
        ciphertextCrc32c: { value: crc32c(request.wrapped) },
        additionalAuthenticatedData: request.aad,
        additionalAuthenticatedDataCrc32c: { value: crc32c(request.aad) },
      },
      options,
    );
    const plaintext = Buffer.from(response.plaintext ?? []);
    if (!sameChecksum(response.plaintextCrc32c, plaintext))
      throw new BackendCallError('unavailable', 'CRC32C_MISMATCH');
    return plaintext;
  });
}

/** Cloud KMS answers FAILED_PRECONDITION for a version that is disabled or scheduled for destruction. */
function notEnabled(backend: string, failure: BackendCallError, what: string): BrokerError | undefined {
  if (failure.cause !== 'GRPC_FAILED_PRECONDITION') return undefined;
  return new BrokerError(
    'BACKEND_REJECTED',
    `backend ${backend}: ${SERVICE} refused to ${what}: the version is not enabled`,
    failure.cause,
  );
}

/** A checksum Cloud KMS returned (an Int64Value, decoded as a string) against the bytes. */
function sameChecksum(value: Int64Value, data: Uint8Array): boolean {
  return value?.value !== undefined && value.value !== null && String(value.value) === String(crc32c(data));
}
