// RSA-OAEP of `seed || SHA-256(header)` with the version's key pair: the public key object
// wraps, the private key (sensitive, never extractable) unwraps. The OAEP label is left
// empty, as SoftHSM refuses any, so the header is bound by its digest in the payload. The
// hash (and MGF1's) is SHA-256 unless the config says SHA-1, which SoftHSM needs; since a
// wrap can only be opened with the hash it was made with, SHA-1 wraps record their own name.
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { BrokerError } from '../../../errors.ts';
import { bindHeader, unbindHeader } from '../../header-digest.ts';
import { ckrName } from '../pkcs11-errors.ts';
import type { CipherOp } from '../threads/cipher-call.ts';
import type { Pkcs11Mechanism, SessionLane, VersionKey } from './mechanism.ts';

export type OaepHash = 'sha256' | 'sha1';

/** The smallest key the backend creates is 3072 bits: a wrap is as long as the modulus. */
const MIN_WRAPPED_BYTES = 3072 / 8;
/** What tokens answer for a hash they do not take with OAEP. */
const REFUSED_PARAMS = new Set(['CKR_ARGUMENTS_BAD', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_MECHANISM_INVALID']);

const HASHES = {
  sha256: { name: 'rsa-oaep', hash: graphene.MechanismEnum.SHA256, mgf: graphene.RsaMgf.MGF1_SHA256 },
  sha1: { name: 'rsa-oaep-sha1', hash: graphene.MechanismEnum.SHA1, mgf: graphene.RsaMgf.MGF1_SHA1 },
} as const;

export const OAEP_MECHANISM_NAMES: readonly string[] = Object.values(HASHES).map(hash => hash.name);

export function rsaOaep(hashName: OaepHash): Pkcs11Mechanism {
  const { name, hash, mgf } = HASHES[hashName];
  const params = { kind: 'oaep', hashAlg: hash, mgf } as const;
  const call = (direction: CipherOp['direction'], key: graphene.Key, input: Buffer, outputBytes: number) => ({
    direction,
    key: key.handle,
    mechanism: pkcs11js.CKM_RSA_PKCS_OAEP,
    params,
    input,
    outputBytes,
  });

  /** A token that refuses this hash says so with a parameter error: name the fix. */
  function explained(error: unknown): unknown {
    const cause = ckrName(error);
    if (cause === undefined || !REFUSED_PARAMS.has(cause)) return error;
    const fix =
      hashName === 'sha256'
        ? 'set oaepHash: sha1 (SoftHSM needs it)'
        : 'check the token with kms-broker hsm-probe';
    return new BrokerError(
      'BACKEND_UNAVAILABLE',
      `the token refused RSA-OAEP with ${hashName.toUpperCase()} (${cause}); ${fix}`,
      cause,
    );
  }

  return {
    name,
    keyKind: 'rsa',
    sealsWith: 'encrypt',
    opensWith: 'decrypt',
    requires: { type: pkcs11js.CKM_RSA_PKCS_OAEP, flags: pkcs11js.CKF_ENCRYPT | pkcs11js.CKF_DECRYPT },
    minWrappedBytes: MIN_WRAPPED_BYTES,

    async seal(lane: SessionLane, key: VersionKey, seed: Buffer, header: Buffer) {
      const { sealKey, modulusBytes } = key;
      if (sealKey === undefined || modulusBytes === undefined)
        throw new Error('CKR_KEY_HANDLE_INVALID: no public key');
      try {
        return (await lane.cipher(call('encrypt', sealKey, bindHeader(seed, header), modulusBytes))).output;
      } catch (error) {
        throw explained(error);
      }
    },

    async open(lane: SessionLane, key: VersionKey, wrapped: Buffer, header: Buffer) {
      let payload: Buffer;
      try {
        payload = (await lane.cipher(call('decrypt', key.key, wrapped, wrapped.length))).output;
      } catch (error) {
        throw explained(error);
      }
      const seed = unbindHeader(payload, header);
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
