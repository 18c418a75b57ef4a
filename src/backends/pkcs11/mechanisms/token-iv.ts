// AES-GCM with an IV the token draws. Tokens that refuse a caller's IV return theirs in one of
// two documented ways:
// - in-params (PKCS#11 v2.40 errata 01 and v3.0; AWS CloudHSM): the caller passes an IV field
//   of 12 zero bytes and the token writes its IV there;
// - appended (Thales Luna in FIPS mode): the caller passes no IV (ulIvLen 0, ulIvBits 96) and
//   the token appends its IV to the output, ciphertext || tag || IV, 16 bytes before Luna
//   firmware 7.9.3 and 12 bytes after.
// The first wrap tries them in that order; the one that works is kept for the token. A token
// that leaves the field zero and appends nothing did not draw an IV: it used the zeros, and
// that ciphertext is thrown away, never stored.
import { BrokerError } from '../../../errors.ts';
import { ckrName } from '../pkcs11-errors.ts';
import { gcmCall, gcmParams, IV_BYTES, noIvParams, TAG_BYTES } from './gcm-params.ts';
import type { SessionLane, VersionKey } from './mechanism.ts';

export const TOKEN_IV_LENGTHS: readonly number[] = [12, 16];
/** How a token says it will not take these parameters. */
const REFUSED_PARAMS = new Set(['CKR_MECHANISM_PARAM_INVALID', 'CKR_ARGUMENTS_BAD']);

export type IvConvention = 'in-params' | 'appended';

class NoTokenIv extends Error {}

async function sealOnce(
  lane: SessionLane,
  key: VersionKey,
  seed: Buffer,
  header: Buffer,
  convention: IvConvention,
): Promise<{ iv: Buffer; sealed: Buffer }> {
  const params = convention === 'in-params' ? gcmParams(Buffer.alloc(IV_BYTES), header) : noIvParams(header);
  // Room for an appended IV of the longest kind.
  const result = await lane.cipher(gcmCall('encrypt', key, params, seed, seed.length + TAG_BYTES + 16));
  const { output } = result;
  // The IV field as the token left it: zero unless it wrote its IV there.
  const field = result.ivField ?? Buffer.alloc(0);
  const appended = output.length - seed.length - TAG_BYTES;
  if (appended === 0 && convention === 'in-params' && field.some(byte => byte !== 0))
    return { iv: field, sealed: output };
  if (TOKEN_IV_LENGTHS.includes(appended)) {
    const split = output.length - appended;
    return { iv: Buffer.from(output.subarray(split)), sealed: Buffer.from(output.subarray(0, split)) };
  }
  throw new NoTokenIv(
    `returned ${appended} bytes beyond the tag and ${field.some(byte => byte !== 0) ? 'an' : 'no'} IV`,
  );
}

/** Seals with the token's IV, by the convention learned for this token or by trying both. */
export async function sealWithTokenIv(
  lane: SessionLane,
  key: VersionKey,
  seed: Buffer,
  header: Buffer,
  learned: { convention?: IvConvention },
): Promise<{ iv: Buffer; sealed: Buffer }> {
  const conventions: IvConvention[] = learned.convention ? [learned.convention] : ['in-params', 'appended'];
  const answers: string[] = [];
  for (const convention of conventions) {
    try {
      const result = await sealOnce(lane, key, seed, header, convention);
      learned.convention = convention;
      return result;
    } catch (error) {
      const refusal = error instanceof NoTokenIv ? error.message : ckrName(error);
      // Anything but a refusal of these parameters (a lost session, a device error) is the
      // connection's to handle.
      if (!(error instanceof NoTokenIv) && (refusal === undefined || !REFUSED_PARAMS.has(refusal)))
        throw error;
      answers.push(`${convention}: ${refusal}`);
    }
  }
  throw new BrokerError(
    'BACKEND_UNAVAILABLE',
    `the token drew no GCM IV (${answers.join('; ')}); a token that takes the IV from the host needs mechanism: aes-gcm`,
    'GCM_IV_NOT_GENERATED',
  );
}
