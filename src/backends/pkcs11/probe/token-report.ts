// What a token says about itself, read without changing anything: C_GetTokenInfo (identity,
// session caps, flags) and C_GetMechanismList/C_GetMechanismInfo, with the pool size the
// broker would use under the token's session cap. `hsm-probe` prints it.
import graphene from 'graphene-pk11';
import type { OfferedMechanism } from '../mechanisms/offered.ts';
import pkcs11js from 'pkcs11js';
import { CKM_AES_KEY_WRAP_KWP } from '../mechanisms/catalog.ts';
import { CK_UNAVAILABLE_INFORMATION, poolSizeFor } from '../session-limit.ts';
import { DEFAULT_SESSIONS, MAX_SESSIONS } from '../pkcs11-schema.ts';

/** The mechanisms the broker's wraps use, by CK_MECHANISM_TYPE; listed first in reports. */
export const RELEVANT_MECHANISMS: ReadonlyMap<number, string> = new Map([
  [pkcs11js.CKM_AES_KEY_GEN, 'CKM_AES_KEY_GEN'],
  [pkcs11js.CKM_AES_GCM, 'CKM_AES_GCM'],
  [pkcs11js.CKM_AES_KEY_WRAP_PAD, 'CKM_AES_KEY_WRAP_PAD'],
  [CKM_AES_KEY_WRAP_KWP, 'CKM_AES_KEY_WRAP_KWP'],
  [pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN, 'CKM_RSA_PKCS_KEY_PAIR_GEN'],
  [pkcs11js.CKM_RSA_PKCS_OAEP, 'CKM_RSA_PKCS_OAEP'],
]);

/** CKF_ flags of CK_MECHANISM_INFO (PKCS#11 2.40 §5.10), in the order reports name them. */
const MECHANISM_FLAGS: readonly (readonly [number, string])[] = [
  [pkcs11js.CKF_HW, 'hw'],
  [pkcs11js.CKF_ENCRYPT, 'encrypt'],
  [pkcs11js.CKF_DECRYPT, 'decrypt'],
  [pkcs11js.CKF_DIGEST, 'digest'],
  [pkcs11js.CKF_SIGN, 'sign'],
  [pkcs11js.CKF_VERIFY, 'verify'],
  [pkcs11js.CKF_GENERATE, 'generate'],
  [pkcs11js.CKF_GENERATE_KEY_PAIR, 'generate-key-pair'],
  [pkcs11js.CKF_WRAP, 'wrap'],
  [pkcs11js.CKF_UNWRAP, 'unwrap'],
  [pkcs11js.CKF_DERIVE, 'derive'],
];

export interface MechanismEntry {
  readonly type: number;
  /** `0x1087` */
  readonly hex: string;
  /** CKM_ name, or `vendor 0x80000001` for one outside the standard. */
  readonly name: string;
  readonly flags: readonly string[];
  readonly minKeySize: number;
  readonly maxKeySize: number;
  /** One the broker's mechanisms use. */
  readonly relevant: boolean;
}

export interface SessionReport {
  /** ulMaxSessionCount / ulMaxRwSessionCount as stated; 0 means no cap (CK_EFFECTIVELY_INFINITE). */
  readonly maxSessions: number;
  readonly maxRwSessions: number;
  /** Sessions open now, the probe's own one included; null when the token does not count them. */
  readonly openSessions: number | null;
  readonly openRwSessions: number | null;
  /** The token's cap, when it states one. */
  readonly cap: number | null;
  /** The most pooled sessions the broker would open on this token (any configured `sessions`). */
  readonly brokerPoolLimit: number | null;
  /** The pool the broker would use with the default `sessions: 4`. */
  readonly defaultPoolSize: number;
}

export interface TokenReport {
  readonly label: string;
  readonly manufacturer: string;
  readonly model: string;
  readonly serial: string;
  readonly firmware: string;
  readonly hardware: string;
  /** CKF_ token flags worth knowing (login-required, pin-count-low, ...). */
  readonly flags: readonly string[];
  readonly sessions: SessionReport;
  /** Every mechanism the token lists, the broker's first. */
  readonly mechanisms: readonly MechanismEntry[];
}

const TOKEN_FLAGS: readonly (readonly [number, string])[] = [
  [graphene.TokenFlag.LOGIN_REQUIRED, 'login-required'],
  [graphene.TokenFlag.PROTECTED_AUTHENTICATION_PATH, 'protected-authentication-path'],
  [graphene.TokenFlag.WRITE_PROTECTED, 'write-protected'],
  [graphene.TokenFlag.USER_PIN_COUNT_LOW, 'user-pin-count-low'],
  [graphene.TokenFlag.USER_PIN_FINAL_TRY, 'user-pin-final-try'],
  [graphene.TokenFlag.USER_PIN_TO_BE_CHANGED, 'user-pin-to-be-changed'],
];

function version(value: { major: number; minor: number }): string {
  return `${value.major}.${value.minor}`;
}

export function mechanismName(type: number): string {
  const known = RELEVANT_MECHANISMS.get(type);
  if (known !== undefined) return known;
  // Numeric enums map back from value to name; vendor-defined ones (CKM_VENDOR_DEFINED and
  // above) and v3.0 additions are not in graphene's table.
  const name = (graphene.MechanismEnum as unknown as Record<number, string | undefined>)[type];
  return name === undefined ? `vendor 0x${type.toString(16)}` : `CKM_${name}`;
}

function entryOf(offered: OfferedMechanism): MechanismEntry {
  return {
    type: offered.type,
    hex: `0x${offered.type.toString(16).padStart(4, '0')}`,
    name: mechanismName(offered.type),
    flags: MECHANISM_FLAGS.filter(([bit]) => (offered.flags & bit) !== 0).map(([, name]) => name),
    minKeySize: offered.minKeySize,
    maxKeySize: offered.maxKeySize,
    relevant: RELEVANT_MECHANISMS.has(offered.type),
  };
}

/** CK_UNAVAILABLE_INFORMATION, which SoftHSM answers for session counts, as null. */
const counted = (count: number) => (count >= CK_UNAVAILABLE_INFORMATION ? null : count);

function sessionsOf(token: graphene.Token): SessionReport {
  const caps = { maxSessionCount: token.maxSessionCount, maxRwSessionCount: token.maxRwSessionCount };
  const limit = poolSizeFor(MAX_SESSIONS, caps);
  return {
    maxSessions: token.maxSessionCount,
    maxRwSessions: token.maxRwSessionCount,
    openSessions: counted(token.sessionCount),
    openRwSessions: counted(token.rwSessionCount),
    cap: limit.tokenCap ?? null,
    brokerPoolLimit: limit.tokenCap === undefined ? null : limit.size,
    defaultPoolSize: poolSizeFor(DEFAULT_SESSIONS, caps).size,
  };
}

/**
 * Reads the token's identity and session caps, and describes `offered` (offeredMechanisms of
 * the slot): nothing is created or changed.
 */
export function tokenReport(slot: graphene.Slot, offered: readonly OfferedMechanism[]): TokenReport {
  const token = slot.getToken();
  const entries = offered.map(entryOf);
  return {
    label: token.label.trim(),
    manufacturer: token.manufacturerID.trim(),
    model: token.model.trim(),
    serial: token.serialNumber.trim(),
    firmware: version(token.firmwareVersion),
    hardware: version(token.hardwareVersion),
    flags: TOKEN_FLAGS.filter(([bit]) => (token.flags & bit) !== 0).map(([, name]) => name),
    sessions: sessionsOf(token),
    mechanisms: [...entries.filter(entry => entry.relevant), ...entries.filter(entry => !entry.relevant)],
  };
}
