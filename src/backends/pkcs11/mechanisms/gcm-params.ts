// AES-GCM parameters as the broker passes them: the v2.40 layout (CK_GCM_PARAMS with
// ulIvBits, which some tokens read instead of ulIvLen), a 128-bit tag, the header as AAD.
import graphene from 'graphene-pk11';

/** The IV the host draws, and the IV field a token fills in. */
export const IV_BYTES = 12;
export const TAG_BYTES = 16;

export function gcmParams(iv: Buffer, header: Buffer): graphene.AesGcm240Params {
  return new graphene.AesGcm240Params(iv, header, TAG_BYTES * 8);
}

/** No IV at all (ulIvLen 0) and ulIvBits 96, which graphene's own class cannot express. */
export function noIvParams(header: Buffer): graphene.IParams {
  const type = graphene.MechParams.AesGCMv240;
  return {
    toCKI: () => ({ iv: Buffer.alloc(0), ivBits: IV_BYTES * 8, aad: header, tagBits: TAG_BYTES * 8, type }),
  };
}
