// The wrap mechanism: CKM_AES_GCM through C_Encrypt/C_Decrypt with a fresh 96-bit IV from
// the host and the envelope header as AAD. The wrapped bytes are IV || ciphertext || tag.
// Both directions use the async forms, so the event loop never waits on the HSM.
import { randomBytes } from 'node:crypto';
import graphene from 'graphene-pk11';
import type { UnwrapRequest } from '../kek.ts';
import { BrokerError } from '../../errors.ts';

export const AES_GCM_MECHANISM = 'aes-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Why `request` cannot be an AES-GCM wrap, checked before any HSM session is taken. */
export function invalidWrapped(request: UnwrapRequest, backendName: string): BrokerError | undefined {
  if (request.mechanism !== AES_GCM_MECHANISM) {
    return new BrokerError(
      'INVALID_CIPHERTEXT',
      `backend ${backendName} cannot unwrap mechanism '${request.mechanism}'`,
    );
  }
  if (request.wrapped.length <= IV_BYTES + TAG_BYTES) {
    return new BrokerError('INVALID_CIPHERTEXT', 'the wrapped key is too short');
  }
  return undefined;
}

export async function sealAesGcm(
  session: graphene.Session,
  key: graphene.SecretKey,
  plaintext: Buffer,
  aad: Buffer,
): Promise<Buffer> {
  const iv = randomBytes(IV_BYTES);
  const params = new graphene.AesGcm240Params(iv, aad, TAG_BYTES * 8);
  const cipher = session.createCipher({ name: 'AES_GCM', params }, key);
  const output = Buffer.alloc(plaintext.length + TAG_BYTES);
  const sealed = await new Promise<Buffer>((resolve, reject) =>
    cipher.once(plaintext, output, (error, data) => (error ? reject(error) : resolve(data))),
  );
  return Buffer.concat([iv, sealed]);
}

export function openAesGcm(
  session: graphene.Session,
  key: graphene.SecretKey,
  wrapped: Buffer,
  aad: Buffer,
): Promise<Buffer> {
  const iv = wrapped.subarray(0, IV_BYTES);
  const sealed = wrapped.subarray(IV_BYTES);
  const params = new graphene.AesGcm240Params(Buffer.from(iv), aad, TAG_BYTES * 8);
  const decipher = session.createDecipher({ name: 'AES_GCM', params }, key);
  const output = Buffer.alloc(sealed.length);
  return new Promise<Buffer>((resolve, reject) =>
    decipher.once(Buffer.from(sealed), output, (error, data) =>
      error ? reject(error) : resolve(Buffer.from(data)),
    ),
  );
}
