// One single-part PKCS#11 cipher call, C_EncryptInit + C_Encrypt or C_DecryptInit +
// C_Decrypt, as plain data: session and key by their handles, the mechanism by its number.
// As data it can run on a crypto thread (crypto-threads.ts) as well as in the calling one.
import pkcs11js from 'pkcs11js';

export type CipherParams =
  | {
      readonly kind: 'gcm';
      /** The IV field; a token that draws its own IV may write it here. */
      readonly iv: Buffer;
      readonly ivBits: number;
      readonly aad: Buffer;
      readonly tagBits: number;
    }
  | { readonly kind: 'oaep'; readonly hashAlg: number; readonly mgf: number };

/** A call on a session the caller holds; the session handle is added by the lane. */
export interface CipherOp {
  readonly direction: 'encrypt' | 'decrypt';
  readonly key: Buffer;
  readonly mechanism: number;
  readonly params: CipherParams | undefined;
  readonly input: Buffer;
  /** Room for the output: the token writes at most this many bytes. */
  readonly outputBytes: number;
}

export interface CipherCall extends CipherOp {
  readonly session: Buffer;
}

export interface CipherResult {
  readonly output: Buffer;
  /** GCM only: the IV field as the token left it. */
  readonly ivField: Buffer | undefined;
}

/** OAEP's label source: CKZ_DATA_SPECIFIED, with no label. */
const CKZ_DATA_SPECIFIED = 1;

function mechanismOf({ mechanism, params }: CipherCall): pkcs11js.Mechanism {
  if (params === undefined) return { mechanism };
  return { mechanism, parameter: parameterOf(params) };
}

function parameterOf(params: CipherParams): pkcs11js.IParams {
  if (params.kind === 'gcm') {
    const { iv, ivBits, aad, tagBits } = params;
    return { type: pkcs11js.CK_PARAMS_AES_GCM_v240, iv, ivBits, aad, tagBits } as pkcs11js.GcmParams;
  }
  const { hashAlg, mgf } = params;
  return { type: pkcs11js.CK_PARAMS_RSA_OAEP, hashAlg, mgf, source: CKZ_DATA_SPECIFIED } as pkcs11js.RsaOAEP;
}

/** Runs the call on `lib` in this thread; throws the token's error as pkcs11js reports it. */
export function performCipher(lib: pkcs11js.PKCS11, call: CipherCall): CipherResult {
  const mechanism = mechanismOf(call);
  const room = Buffer.alloc(call.outputBytes);
  let output: Buffer;
  if (call.direction === 'encrypt') {
    lib.C_EncryptInit(call.session, mechanism, call.key);
    output = lib.C_Encrypt(call.session, call.input, room);
  } else {
    lib.C_DecryptInit(call.session, mechanism, call.key);
    output = lib.C_Decrypt(call.session, call.input, room);
  }
  return { output, ivField: call.params?.kind === 'gcm' ? call.params.iv : undefined };
}
