// Every backend kind the broker knows. A new kind is its own folder (schema, checks and a
// descriptor with a lazy loader) plus one line here; the config's validation and the
// registry both read this list.
import type { BackendKind, ConfigOf } from './backend-kind.ts';
import { alibabaKmsKind } from './alibaba-kms/descriptor.ts';
import { awsKmsKind } from './aws-kms/descriptor.ts';
import { azureKeyVaultKind } from './azure-keyvault/descriptor.ts';
import { escrowKind } from './escrow/descriptor.ts';
import { gcpKmsKind } from './gcp-kms/descriptor.ts';
import { pkcs11Kind } from './pkcs11/descriptor.ts';
import { vaultTransitKind } from './vault-transit/descriptor.ts';

export const backendKinds = [
  pkcs11Kind,
  vaultTransitKind,
  awsKmsKind,
  azureKeyVaultKind,
  alibabaKmsKind,
  gcpKmsKind,
  escrowKind,
] as const;

export type BackendConfig = ConfigOf<(typeof backendKinds)[number]>;
export type BackendType = BackendConfig['type'];

const kindsByType: ReadonlyMap<string, BackendKind> = new Map(
  backendKinds.map((kind): [string, BackendKind] => [kind.type, kind]),
);

/** The kind of a `type` the config schema accepted. */
export function backendKind(type: BackendType): BackendKind {
  const kind = kindsByType.get(type);
  if (kind === undefined) throw new Error(`no backend kind '${type}'`);
  return kind;
}

/** The names of the configured backends that only wrap (escrow keys). */
export function writeOnlyBackends(backends: readonly BackendConfig[]): ReadonlySet<string> {
  return new Set(backends.filter(backend => backendKind(backend.type).writeOnly === true).map(b => b.name));
}
