// EncryptionConfiguration files for the end-to-end tests, written as an operator writes them:
// the first provider encrypts new writes, every listed provider can read.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

export type Provider =
  | { readonly kms: { readonly apiVersion: 'v1' | 'v2'; readonly name: string; readonly socket: string } }
  | { readonly aescbc: { readonly name: string; readonly secret: string } }
  | { readonly identity: Record<string, never> };

export const identity: Provider = { identity: {} };

/** A KMS provider on a broker's socket, with the apiserver's default 3 s call timeout. */
export function kms(name: string, socket: string, apiVersion: 'v1' | 'v2' = 'v2'): Provider {
  return { kms: { apiVersion, name, socket } };
}

/** A local AES-CBC provider with a fresh 32-byte key (the pre-KMS way many clusters started). */
export function aescbc(name: string): Provider {
  return { aescbc: { name, secret: randomBytes(32).toString('base64') } };
}

function toYaml(provider: Provider): Record<string, unknown> {
  if ('kms' in provider) {
    const { apiVersion, name, socket } = provider.kms;
    return { kms: { apiVersion, name, endpoint: `unix://${socket}`, timeout: '3s' } };
  }
  if ('aescbc' in provider) return { aescbc: { keys: [provider.aescbc] } };
  return provider;
}

/** Writes the file the apiserver reads with --encryption-provider-config (Secrets only). */
export function writeEncryptionConfig(path: string, providers: readonly Provider[]): void {
  const config = {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [{ resources: ['secrets'], providers: providers.map(toYaml) }],
  };
  writeFileSync(path, stringify(config), { mode: 0o600 });
}
