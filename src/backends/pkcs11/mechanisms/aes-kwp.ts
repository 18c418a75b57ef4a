// AES key wrap with padding (RFC 5649) of `seed || SHA-256(header)`. Tokens offer it for
// C_WrapKey/C_UnwrapKey only (SoftHSM answers C_Encrypt with CKR_MECHANISM_INVALID), so the
// payload becomes a short-lived session object (not on the token, extractable, not
// sensitive) that the KEK wraps, and an unwrap lands in such an object whose value is read
// back. Both objects are destroyed at once, also on failure. The mechanism constant differs
// by vendor: CKM_AES_KEY_WRAP_PAD (v2.40, SoftHSM), CKM_AES_KEY_WRAP_KWP (v3.0), or a
// vendor's own; the wrapped bytes are RFC 5649's whichever constant names them.
// It stays on the event loop, off the crypto threads: C_WrapKey and C_UnwrapKey have no init
// step, and pkcs11js already runs them on libuv's pool.
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { BrokerError } from '../../../errors.ts';
import { bindHeader, unbindHeader, HEADER_DIGEST_BYTES } from '../../header-digest.ts';
import {
  destroyQuietly,
  settle,
  type Pkcs11Mechanism,
  type SessionLane,
  type VersionKey,
} from './mechanism.ts';

const { ObjectClass, KeyType } = graphene;
/** RFC 5649 adds one 64-bit block; the payload holds at least a byte and the digest. */
const MIN_WRAPPED_BYTES = 8 + HEADER_DIGEST_BYTES + 8;

/** The template of the session object that carries the payload in and out of the token. */
const PAYLOAD_OBJECT = {
  class: ObjectClass.SECRET_KEY,
  keyType: KeyType.GENERIC_SECRET,
  token: false,
  private: true,
  sensitive: false,
  extractable: true,
} as const;

function wrapKey(session: graphene.Session, algorithm: number, kek: graphene.Key, payload: graphene.Key) {
  return new Promise<Buffer>((resolve, reject) =>
    session.wrapKey(
      { name: algorithm, params: null },
      kek,
      payload,
      settle(data => resolve(Buffer.from(data)), reject),
    ),
  );
}

function unwrapKey(session: graphene.Session, algorithm: number, kek: graphene.Key, wrapped: Buffer) {
  return new Promise<graphene.Key>((resolve, reject) =>
    session.unwrapKey(
      { name: algorithm, params: null },
      kek,
      wrapped,
      PAYLOAD_OBJECT,
      settle(resolve, reject),
    ),
  );
}

/** The aes-kwp mechanism over the token's KWP constant (`mechanismType`). */
export function aesKwp(mechanismType: number): Pkcs11Mechanism {
  return {
    name: 'aes-kwp',
    keyKind: 'aes',
    sealsWith: 'wrap',
    opensWith: 'unwrap',
    requires: { type: mechanismType, flags: pkcs11js.CKF_WRAP | pkcs11js.CKF_UNWRAP },
    minWrappedBytes: MIN_WRAPPED_BYTES,

    async seal({ session }: SessionLane, key: VersionKey, seed: Buffer, header: Buffer) {
      const kek = key.sealKey ?? key.key;
      const payload = session
        .create({ ...PAYLOAD_OBJECT, value: bindHeader(seed, header) })
        .toType<graphene.Key>();
      try {
        return await wrapKey(session, mechanismType, kek, payload);
      } finally {
        destroyQuietly(payload);
      }
    },

    async open({ session }: SessionLane, key: VersionKey, wrapped: Buffer, header: Buffer) {
      const payload = await unwrapKey(session, mechanismType, key.key, wrapped);
      let seed: Buffer | undefined;
      try {
        seed = unbindHeader(payload.getAttribute('value') as Buffer, header);
      } finally {
        destroyQuietly(payload);
      }
      if (seed === undefined) {
        throw new BrokerError(
          'INVALID_CIPHERTEXT',
          'the wrapped key does not belong to this envelope header: tampered with, or moved from another envelope',
        );
      }
      return seed;
    },
  };
}
