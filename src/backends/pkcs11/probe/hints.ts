// What the token's answers suggest about how it is run (FIPS mode, software or hardware, the
// PIN's state). Hints, not claims: a token's own statements and behaviour are evidence, and a
// certificate is the only proof of FIPS 140 validation.
import type { TrialResult } from './mechanism-trials.ts';
import type { TokenReport } from './token-report.ts';
import type { IvConvention } from '../mechanisms/token-iv.ts';

export interface GcmIvBehaviour {
  /** aes-gcm round-tripped with an IV the host drew; null when the token lacks AES-GCM. */
  readonly hostIvAccepted: boolean | null;
  /** aes-gcm-hsm-iv: the token wrote an IV of its own; null when the token lacks AES-GCM. */
  readonly tokenGeneratesIv: boolean | null;
  /** How it returned that IV: in the IV field (PKCS#11 v3.0, CloudHSM) or appended (Luna). */
  readonly tokenIvReturned: IvConvention | null;
}

function outcome(trials: readonly TrialResult[], mechanism: TrialResult['mechanism']): boolean | null {
  const trial = trials.find(candidate => candidate.mechanism === mechanism);
  return trial === undefined || trial.outcome === 'not-offered' ? null : trial.outcome === 'ok';
}

export function gcmIvBehaviour(trials: readonly TrialResult[]): GcmIvBehaviour {
  const tokenIv = trials.find(trial => trial.mechanism === 'aes-gcm-hsm-iv');
  return {
    hostIvAccepted: outcome(trials, 'aes-gcm'),
    tokenGeneratesIv: outcome(trials, 'aes-gcm-hsm-iv'),
    tokenIvReturned: tokenIv?.ivConvention ?? null,
  };
}

export function hints(token: TokenReport, gcm: GcmIvBehaviour, trials: readonly TrialResult[]): string[] {
  const found: string[] = [];
  if (gcm.hostIvAccepted === false && gcm.tokenGeneratesIv === true)
    found.push(
      'the token refuses a GCM IV chosen by the host and generates its own: what HSMs in FIPS mode do (Thales Luna, AWS CloudHSM); likely FIPS mode',
    );
  if (gcm.hostIvAccepted === true)
    found.push(
      'the token accepts a GCM IV chosen by the host: HSMs in FIPS mode usually refuse that, so FIPS mode is likely off (or not enforced for GCM)',
    );
  if (token.mechanisms.length > 0 && token.mechanisms.every(entry => !entry.flags.includes('hw')))
    found.push(
      'no mechanism is flagged CKF_HW: the token computes in software (a software token such as SoftHSM, no hardware boundary)',
    );
  const oaep = (hash: string) =>
    trials.find(trial => trial.mechanism === 'rsa-oaep' && trial.oaepHash === hash);
  if (oaep('sha256')?.outcome === 'refused' && oaep('sha1')?.outcome === 'ok')
    found.push('RSA-OAEP works with SHA-1 only (as SoftHSM 2.6): rsa-oaep needs oaepHash: sha1 here');
  if (!token.flags.includes('login-required'))
    found.push(
      'the token does not require a login (CKF_LOGIN_REQUIRED off): its private objects may be open to anyone',
    );
  if (token.flags.includes('user-pin-final-try'))
    found.push('the user PIN has one try left (CKF_USER_PIN_FINAL_TRY): one more wrong PIN locks the token');
  else if (token.flags.includes('user-pin-count-low'))
    found.push('a wrong user PIN was given since the last good login (CKF_USER_PIN_COUNT_LOW)');
  return found;
}
