// One round trip per mechanism the broker could be configured with, through the broker's own
// mechanism modules, on temporary session keys (CKA_TOKEN false) that are destroyed at once,
// also when a trial fails: a probe leaves the token holding what it held before. Each trial
// seals a random 32-byte seed under a made-up envelope header, opens it, compares, and checks
// that the same wrap does not open under another header (the header binding holds).
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { isBrokerError } from '../../../errors.ts';
import { generateFor, versionKey } from '../key-objects.ts';
import { aesGcm, aesGcmHsmIv } from '../mechanisms/aes-gcm.ts';
import { aesKwp } from '../mechanisms/aes-kwp.ts';
import {
  destroyQuietly,
  inThreadLane,
  type Pkcs11Mechanism,
  type VersionKey,
} from '../mechanisms/mechanism.ts';
import { CKM_AES_KEY_WRAP_KWP, DEFAULT_KWP_MECHANISM } from '../mechanisms/catalog.ts';
import { offers, type OfferedMechanism } from '../mechanisms/offered.ts';
import { rsaOaep, type OaepHash } from '../mechanisms/rsa-oaep.ts';
import { ckrName } from '../pkcs11-errors.ts';
import type { IvConvention } from '../mechanisms/token-iv.ts';
import { mechanismName } from './token-report.ts';

const { CKM_AES_KEY_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE, CKF_GENERATE_KEY_PAIR } = pkcs11js;
/** The RFC 5649 constants tokens use: v2.40's CKM_AES_KEY_WRAP_PAD and v3.0's CKM_AES_KEY_WRAP_KWP. */
export const KWP_CONSTANTS: readonly number[] = [DEFAULT_KWP_MECHANISM, CKM_AES_KEY_WRAP_KWP];
const PROBE_RSA_BITS = 3072;
const PROBE_LABEL = 'kms-broker-hsm-probe';
const HEADER = Buffer.from('kms-broker hsm-probe: a made-up envelope header');
const OTHER_HEADER = Buffer.from('kms-broker hsm-probe: another envelope header');

export type TrialOutcome = 'ok' | 'refused' | 'not-offered' | 'failed';

export interface TrialResult {
  /** The `mechanism` config value this trial stands for. */
  readonly mechanism: 'aes-gcm' | 'aes-gcm-hsm-iv' | 'aes-kwp' | 'rsa-oaep';
  /** aes-kwp: the CK_MECHANISM_TYPE tried. */
  readonly kwpMechanism?: number;
  /** rsa-oaep: the OAEP hash tried. */
  readonly oaepHash?: OaepHash;
  readonly outcome: TrialOutcome;
  /** Why it was not ok: the token's CKR_ name, GCM_IV_NOT_GENERATED, or what was missing. */
  readonly reason?: string;
  /** Seal, open and the wrong-header check, in milliseconds; absent when nothing was tried. */
  readonly ms?: number;
  /** aes-gcm-hsm-iv that worked: how the token returned its IV. */
  readonly ivConvention?: IvConvention;
}

type TrialName = Pick<TrialResult, 'mechanism' | 'kwpMechanism' | 'oaepHash'>;

/** The error's CKR_ name (or the broker's cause name), never its text. */
function reasonOf(error: unknown): string {
  if (isBrokerError(error)) return error.causeName ?? error.code;
  return ckrName(error) ?? (error instanceof Error ? error.name : 'error');
}

/** Seal, open, compare, and a wrong header refused: ok, or why not. */
async function roundTrip(
  session: graphene.Session,
  mechanism: Pkcs11Mechanism,
  key: VersionKey,
  name: TrialName,
): Promise<TrialResult> {
  const seed = randomBytes(32);
  const started = performance.now();
  const took = () => Math.round((performance.now() - started) * 10) / 10;
  // The probe runs its calls in its own thread: a CLI command needs no crypto threads.
  const lane = inThreadLane(session);
  let wrapped: Buffer;
  let opened: Buffer;
  try {
    wrapped = await mechanism.seal(lane, key, seed, HEADER);
    opened = await mechanism.open(lane, key, wrapped, HEADER);
  } catch (error) {
    return { ...name, outcome: 'refused', reason: reasonOf(error), ms: took() };
  }
  if (!opened.equals(seed)) return { ...name, outcome: 'failed', reason: 'OPENED_ANOTHER_SEED', ms: took() };
  const bound = await mechanism.open(lane, key, wrapped, OTHER_HEADER).then(
    () => false,
    () => true,
  );
  return bound
    ? { ...name, outcome: 'ok', ms: took() }
    : { ...name, outcome: 'failed', reason: 'WRONG_HEADER_ACCEPTED', ms: took() };
}

/** A trial on a fresh AES session key, destroyed afterwards whatever happened. */
async function aesTrial(
  session: graphene.Session,
  offered: readonly OfferedMechanism[],
  mechanism: Pkcs11Mechanism,
  name: TrialName,
): Promise<TrialResult> {
  if (!offers(offered, mechanism))
    return { ...name, outcome: 'not-offered', reason: mechanismName(mechanism.requires.type) };
  if (!offered.some(info => info.type === CKM_AES_KEY_GEN && (info.flags & CKF_GENERATE) !== 0))
    return { ...name, outcome: 'not-offered', reason: 'CKM_AES_KEY_GEN' };
  let key: graphene.Key | undefined;
  try {
    key = await generateFor(session, mechanism, probeKeyName(), 'session');
    return await roundTrip(session, mechanism, versionKey(session, key), name);
  } catch (error) {
    return { ...name, outcome: 'refused', reason: reasonOf(error) };
  } finally {
    destroyQuietly(key);
  }
}

function probeKeyName() {
  return { label: PROBE_LABEL, id: randomBytes(16), rsaBits: PROBE_RSA_BITS };
}

/** Both OAEP hashes on one temporary key pair: RSA generation is slow on a token. */
async function rsaTrials(
  session: graphene.Session,
  offered: readonly OfferedMechanism[],
): Promise<TrialResult[]> {
  const hashes: OaepHash[] = ['sha256', 'sha1'];
  const named = hashes.map(hash => ({ mechanism: 'rsa-oaep' as const, oaepHash: hash }));
  const mechanisms = hashes.map(hash => rsaOaep(hash));
  const [first] = mechanisms;
  if (first === undefined || !offers(offered, first))
    return named.map(name => ({ ...name, outcome: 'not-offered', reason: 'CKM_RSA_PKCS_OAEP' }));
  if (
    !offered.some(
      info => info.type === CKM_RSA_PKCS_KEY_PAIR_GEN && (info.flags & CKF_GENERATE_KEY_PAIR) !== 0,
    )
  )
    return named.map(name => ({ ...name, outcome: 'not-offered', reason: 'CKM_RSA_PKCS_KEY_PAIR_GEN' }));
  let privateKey: graphene.Key | undefined;
  let key: VersionKey | undefined;
  try {
    privateKey = await generateFor(session, first, probeKeyName(), 'session');
    key = versionKey(session, privateKey);
    const results: TrialResult[] = [];
    for (const [index, mechanism] of mechanisms.entries()) {
      const name = named[index] ?? { mechanism: 'rsa-oaep' as const };
      results.push(await roundTrip(session, mechanism, key, name));
    }
    return results;
  } catch (error) {
    return named.map(name => ({ ...name, outcome: 'refused', reason: reasonOf(error) }));
  } finally {
    destroyQuietly(key?.sealKey);
    destroyQuietly(privateKey);
  }
}

/**
 * Every candidate: aes-gcm (host IV), aes-gcm-hsm-iv (token IV), aes-kwp under each RFC 5649
 * constant, rsa-oaep with SHA-256 and SHA-1. Runs one at a time on `session` (logged in).
 */
export async function runTrials(
  session: graphene.Session,
  offered: readonly OfferedMechanism[],
): Promise<TrialResult[]> {
  const tokenIv = aesGcmHsmIv();
  const tokenIvTrial = await aesTrial(session, offered, tokenIv, { mechanism: 'aes-gcm-hsm-iv' });
  const results: TrialResult[] = [
    await aesTrial(session, offered, aesGcm, { mechanism: 'aes-gcm' }),
    tokenIv.ivConvention === undefined
      ? tokenIvTrial
      : { ...tokenIvTrial, ivConvention: tokenIv.ivConvention },
  ];
  for (const constant of KWP_CONSTANTS) {
    results.push(
      await aesTrial(session, offered, aesKwp(constant), { mechanism: 'aes-kwp', kwpMechanism: constant }),
    );
  }
  results.push(...(await rsaTrials(session, offered)));
  return results;
}
