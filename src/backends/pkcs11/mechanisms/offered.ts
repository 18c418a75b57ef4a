// Whether a token offers a mechanism: C_GetMechanismList and C_GetMechanismInfo, read once
// at the first connect, so a config the token cannot serve fails start-up by name instead
// of failing every wrap.
import type graphene from 'graphene-pk11';
import { BrokerError } from '../../../errors.ts';
import type { Pkcs11Mechanism } from './mechanism.ts';

export interface OfferedMechanism {
  readonly type: number;
  readonly flags: number;
  readonly minKeySize: number;
  readonly maxKeySize: number;
}

/** Every mechanism the token lists, with its CKF_ flags and key sizes. */
export function offeredMechanisms(slot: graphene.Slot): OfferedMechanism[] {
  const list = slot.getMechanisms();
  const offered: OfferedMechanism[] = [];
  for (let index = 0; index < list.length; index++) {
    const info = list.items(index);
    offered.push({
      type: info.type,
      flags: info.flags,
      minKeySize: info.minKeySize,
      maxKeySize: info.maxKeySize,
    });
  }
  return offered;
}

/** Whether `mechanism` is listed with every flag it uses. */
export function offers(offered: readonly OfferedMechanism[], mechanism: Pkcs11Mechanism): boolean {
  const { type, flags } = mechanism.requires;
  return offered.some(info => info.type === type && (info.flags & flags) === flags);
}

export function assertOffered(slot: graphene.Slot, mechanism: Pkcs11Mechanism, backendName: string): void {
  if (offers(offeredMechanisms(slot), mechanism)) return;
  const { type } = mechanism.requires;
  throw new BrokerError(
    'HSM_MECHANISM_UNSUPPORTED',
    `backend ${backendName}: the token does not offer mechanism ${mechanism.name} (CK_MECHANISM_TYPE 0x${type.toString(16)} with the flags it needs); run kms-broker hsm-probe to see what it offers`,
  );
}
