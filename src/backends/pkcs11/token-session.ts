// The token side of a connection: finding the configured token among the module's slots,
// opening sessions on it, logging the anchor session in, and checking that it still is.
import graphene from 'graphene-pk11';
import type { Pkcs11BackendConfig } from './pkcs11-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import { BrokerError } from '../../errors.ts';
import { classify, ckrName } from './pkcs11-errors.ts';

// CK_STATE values (PKCS#11 2.40 §5.7) of a session whose user is logged in.
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;
const { SessionFlag, UserType } = graphene;

export function findSlot(module: graphene.Module, config: Pkcs11BackendConfig): graphene.Slot {
  const { tokenLabel, tokenSerial, slotId } = config;
  const slots = module.getSlots(true);
  for (let index = 0; index < slots.length; index++) {
    const slot = slots.items(index);
    // A slot's handle is its CK_SLOT_ID as a native unsigned long (little-endian on x64 and arm64).
    if (slotId !== undefined && slot.handle.readBigUInt64LE(0) === BigInt(slotId)) return slot;
    const token = slot.getToken();
    if (tokenLabel !== undefined && token.label.trim() === tokenLabel) return slot;
    if (tokenSerial !== undefined && token.serialNumber.trim() === tokenSerial) return slot;
  }
  const wanted =
    tokenLabel !== undefined
      ? `no token with label '${tokenLabel}'`
      : tokenSerial !== undefined
        ? `no token with serial '${tokenSerial}'`
        : `no token in slot ${String(slotId)}`;
  throw new BrokerError('HSM_TOKEN_NOT_FOUND', `backend ${config.name}: ${wanted} in ${config.module}`);
}

export function openSession(slot: graphene.Slot): graphene.Session {
  return slot.open(SessionFlag.SERIAL_SESSION | SessionFlag.RW_SESSION);
}

/** Opens a session and logs the user in with the configured PIN. */
export function openLoggedIn(
  slot: graphene.Slot,
  config: Pkcs11BackendConfig,
  readSecret: SecretReader,
): graphene.Session {
  const anchor = openSession(slot);
  try {
    const pin = readSecret(
      { file: config.pinFile, env: config.pinEnv, envKey: 'pinEnv' },
      `backend ${config.name} PIN`,
    );
    anchor.login(pin, UserType.USER);
  } catch (error) {
    const name = ckrName(error);
    if (name !== 'CKR_USER_ALREADY_LOGGED_IN') {
      closeQuietly(anchor);
      if (classify(error) === 'pin') {
        throw new BrokerError(
          'HSM_LOGIN_FAILED',
          `backend ${config.name}: the token rejected the PIN (${name}); not retrying, because repeated failures lock or wipe tokens`,
          name,
        );
      }
      throw name === undefined
        ? error
        : new BrokerError('HSM_LOGIN_FAILED', `backend ${config.name}: login failed (${name})`, name);
    }
  }
  return anchor;
}

/**
 * Throws the token's own error when it cannot serve: C_GetTokenInfo notices a token whose
 * storage went away (SoftHSM: CKR_GENERAL_ERROR, while its sessions still look logged in and
 * C_FindObjects finds nothing), and the anchor's session state a lost login.
 */
export function assertTokenUsable(slot: graphene.Slot, anchor: graphene.Session): void {
  slot.getToken();
  assertLoggedIn(anchor);
}

/** Throws a CKR_USER_NOT_LOGGED_IN error when the session's user is no longer logged in. */
function assertLoggedIn(session: graphene.Session): void {
  const info = session.lib.C_GetSessionInfo(session.handle);
  if (info.state !== CKS_RW_USER_FUNCTIONS && info.state !== CKS_RO_USER_FUNCTIONS) {
    throw new Error('CKR_USER_NOT_LOGGED_IN: session is not logged in');
  }
}

export function closeQuietly(session: graphene.Session): void {
  try {
    session.close();
  } catch {
    // Already closed by the library (logout, reset): nothing left to release.
  }
}
