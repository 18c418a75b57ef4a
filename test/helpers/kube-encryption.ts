// EncryptionConfiguration files for the end-to-end tests, written as an operator writes them:
// the first provider encrypts new writes, every listed provider can read.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { CLI } from './broker-process.ts';

export type Provider =
  | { readonly kms: Record<string, unknown> }
  | { readonly aescbc: { readonly name: string; readonly secret: string } }
  | { readonly identity: Record<string, never> };

export const identity: Provider = { identity: {} };

/**
 * The KMS provider for a broker, exactly as `kms-broker encryption-config` prints it for the
 * broker's config file (endpoint, timeout, cachesize for v1): the suite runs the apiserver on
 * what operators are told to use.
 */
export function kms(name: string, brokerConfigPath: string, apiVersion: 'v1' | 'v2' = 'v2'): Provider {
  const printed = execFileSync(
    CLI,
    ['encryption-config', '--config', brokerConfigPath, '--name', name, '--kms-api', apiVersion],
    {
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  const config = parse(printed) as { resources: { providers: Record<string, unknown>[] }[] };
  const provider = config.resources[0]?.providers[0];
  if (provider === undefined || !('kms' in provider))
    throw new Error(`kms-broker encryption-config printed no kms provider first:\n${printed}`);
  return provider as Provider;
}

/** A local AES-CBC provider with a fresh 32-byte key (the pre-KMS way many clusters started). */
export function aescbc(name: string): Provider {
  return { aescbc: { name, secret: randomBytes(32).toString('base64') } };
}

function toYaml(provider: Provider): Record<string, unknown> {
  if ('aescbc' in provider) return { aescbc: { keys: [provider.aescbc] } };
  return provider;
}

/** Writes the file the apiserver reads with --encryption-provider-config. */
export function writeEncryptionConfig(
  path: string,
  providers: readonly Provider[],
  resources: readonly string[] = ['secrets'],
): void {
  const config = {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [{ resources: [...resources], providers: providers.map(toYaml) }],
  };
  writeFileSync(path, stringify(config), { mode: 0o600 });
}
