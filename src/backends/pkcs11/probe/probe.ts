// `hsm-probe` against one token: load the module, find the token, log in once (a wrong PIN is
// never retried), read what the token says, try every mechanism on temporary session keys,
// and recommend a backend block. Everything the probe opens it closes, also on failure.
import graphene from 'graphene-pk11';
import { BrokerError, isBrokerError } from '../../../errors.ts';
import type { SecretReader } from '../../../secrets.ts';
import { findUnwrapKeys } from '../key-objects.ts';
import { offeredMechanisms } from '../mechanisms/offered.ts';
import { loadModule } from '../module-cache.ts';
import { DEFAULT_SESSIONS, type Pkcs11BackendConfig } from '../pkcs11-schema.ts';
import { closeQuietly, findSlot, openLoggedIn } from '../token-session.ts';
import { gcmIvBehaviour, hints, type GcmIvBehaviour } from './hints.ts';
import { runTrials, type TrialResult } from './mechanism-trials.ts';
import { recommend, targetBlock, type ProbeTarget, type Recommendation } from './recommend.ts';
import { tokenReport, type TokenReport } from './token-report.ts';

export interface ProbeResult {
  readonly token: TokenReport;
  readonly gcmIv: GcmIvBehaviour;
  readonly hints: readonly string[];
  readonly trials: readonly TrialResult[];
  /** Whether the token holds a key labelled keyLabel already (found, never read). */
  readonly keyLabelFound: boolean;
  readonly recommended: Recommendation | null;
}

/** The token as the command line chose it: "--token kms". */
function chosenToken(token: ProbeTarget['token']): string {
  if ('tokenLabel' in token) return `--token ${token.tokenLabel}`;
  if ('tokenSerial' in token) return `--token-serial ${token.tokenSerial}`;
  return `--slot-id ${token.slotId}`;
}

/** The backend config the probe's target stands for: what findSlot and openLoggedIn read. */
function asBackendConfig(target: ProbeTarget): Pkcs11BackendConfig {
  return {
    ...targetBlock(target),
    generateIfMissing: false,
    mechanism: 'aes-gcm',
    sessions: DEFAULT_SESSIONS,
  };
}

/** The tokens a module lists, for a message: "'kms' (serial 1a2b, slot 1234)". */
function listedTokens(module: graphene.Module): string {
  const slots = module.getSlots(true);
  const found: string[] = [];
  for (let index = 0; index < slots.length; index++) {
    const slot = slots.items(index);
    const token = slot.getToken();
    // SoftHSM always lists a free slot with an uninitialized token: nothing to choose.
    if ((token.flags & graphene.TokenFlag.TOKEN_INITIALIZED) === 0) continue;
    found.push(
      `'${token.label.trim()}' (serial ${token.serialNumber.trim()}, slot ${slot.handle.readBigUInt64LE(0).toString()})`,
    );
  }
  return found.length === 0 ? 'none' : found.join(', ');
}

function findTarget(
  module: graphene.Module,
  target: ProbeTarget,
  config: Pkcs11BackendConfig,
): graphene.Slot {
  try {
    return findSlot(module, config);
  } catch (error) {
    if (!isBrokerError(error) || error.code !== 'HSM_TOKEN_NOT_FOUND') throw error;
    throw new BrokerError(
      'HSM_TOKEN_NOT_FOUND',
      `no token matches ${chosenToken(target.token)} in ${target.module}; the tokens it lists: ${listedTokens(module)}. Give one of these to --token, --token-serial or --slot-id (a module that reads its config from the environment, as SoftHSM does from SOFTHSM2_CONF, must see the same environment as the tool that made the token)`,
    );
  }
}

export async function probeToken(target: ProbeTarget, readSecret: SecretReader): Promise<ProbeResult> {
  const config = asBackendConfig(target);
  const loaded = loadModule(target.module);
  try {
    const slot = findTarget(loaded.module, target, config);
    // The only C_Login of the probe: openLoggedIn never retries a PIN the token refused.
    const session = openLoggedIn(slot, config, readSecret);
    try {
      const offered = offeredMechanisms(slot);
      const trials = await runTrials(session, offered);
      // Read after the trials so that nothing they did is hidden; their keys are gone by now.
      const token = tokenReport(slot, offered);
      const keyLabelFound = findUnwrapKeys(session, target.keyLabel).length > 0;
      const gcmIv = gcmIvBehaviour(trials);
      return {
        token,
        gcmIv,
        hints: hints(token, gcmIv, trials),
        trials,
        keyLabelFound,
        recommended: recommend(trials, token.sessions, target, keyLabelFound) ?? null,
      };
    } finally {
      // Closing the session also takes any session object a failed destroy left behind.
      closeQuietly(session);
    }
  } finally {
    loaded.release();
  }
}
