// CryptoKeyVersion names and identities: the short number the envelope records, and the
// fingerprint that tells a recreated key from the one the state file knows.
import type { protos } from '@google-cloud/kms';
import { BrokerError } from '../../errors.ts';
import type { KeyVersionInfo } from '../kek.ts';

type CryptoKeyVersion = protos.google.cloud.kms.v1.ICryptoKeyVersion;

/** The version number of `name` when it is a version of `keyName`. */
export function versionId(keyName: string, name: string | null | undefined): number | undefined {
  const prefix = `${keyName}/cryptoKeyVersions/`;
  if (typeof name !== 'string' || !name.startsWith(prefix)) return undefined;
  const id = Number(name.slice(prefix.length));
  return Number.isSafeInteger(id) && id > 0 ? id : undefined;
}

/**
 * Cloud KMS never reuses a version name, but a key recreated under the same name elsewhere
 * (another project of the same ID, an emulator) would: the creation time tells them apart.
 */
export function versionInfo(keyName: string, version: CryptoKeyVersion, backend: string): KeyVersionInfo {
  const id = versionId(keyName, version.name);
  if (id === undefined) {
    throw new BrokerError(
      'BACKEND_UNAVAILABLE',
      `backend ${backend}: Google Cloud KMS returned a version of another key`,
      'BAD_RESPONSE',
    );
  }
  const seconds = String(version.createTime?.seconds ?? 0);
  const nanos = version.createTime?.nanos ?? 0;
  const millis = Number(seconds) * 1000 + Math.floor(nanos / 1e6);
  return {
    version: String(id),
    fingerprint: `gcp-kms:${keyName}/cryptoKeyVersions/${id}@${seconds}.${String(nanos).padStart(9, '0')}`,
    createdAt: Number.isFinite(millis) && millis > 0 ? new Date(millis).toISOString() : undefined,
  };
}

export function splitKeyName(keyName: string): [keyRing: string, cryptoKeyId: string] {
  const at = keyName.lastIndexOf('/cryptoKeys/');
  return [keyName.slice(0, at), keyName.slice(at + '/cryptoKeys/'.length)];
}
