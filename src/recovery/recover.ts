// One recovery: every broker value under the prefix (or of one resource, one namespace) whose
// seed a source recovers is decrypted as kube-apiserver would and written as a manifest (see
// k8s-object.ts) under <out>/<resource>/<namespace or _cluster>/<name>. What cannot be
// recovered or written is listed with its reason; the plaintext lives only in the 0600 file.
import type { EtcdClient } from '../usage/etcd-client.ts';
import { readPrefix, type Progress } from '../usage/paged-read.ts';
import { resourceOf } from '../usage/resource-name.ts';
import { MAX_LISTED_KEYS } from './drill-tally.ts';
import { toManifest } from './k8s-object.ts';
import { decryptKmsV1, decryptKmsV2 } from './kms-decrypt.ts';
import { writeNew } from './output-folder.ts';
import type { SeedUnwrapper } from './seed-sources.ts';
import { readValue, type BrokerValue } from './stored-value.ts';

export interface RecoverOptions {
  readonly prefix: string;
  readonly out: string;
  readonly resource?: string | undefined;
  readonly namespace?: string | undefined;
  readonly onProgress?: (progress: Progress) => void;
}

export interface RecoverResult {
  readonly revision: string;
  /** Selected values that are not the broker's (identity, another plugin, ...): not written. */
  notOurs: number;
  /** Files written, by kind of object. */
  readonly written: Record<string, number>;
  files: number;
  readonly failed: { count: number; readonly values: { readonly key: string; readonly reason: string }[] };
}

/** Where a cluster-scoped object goes: no namespace can be named this (it has an underscore). */
export const CLUSTER_SCOPED = '_cluster';
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;
const TWO_SEGMENT_PREFIXES = new Set(['services/specs', 'services/endpoints']);
/** Resources stored under another name (resource-name.ts): read under the whole prefix. */
const RENAMED = new Set(['services', 'endpoints', 'nodes', 'replicationcontrollers']);

export async function runRecovery(
  client: EtcdClient,
  unwrapper: SeedUnwrapper,
  options: RecoverOptions,
): Promise<RecoverResult> {
  const result: RecoverResult = {
    revision: '0',
    notOurs: 0,
    written: {},
    files: 0,
    failed: { count: 0, values: [] },
  };
  const fail = (key: string, reason: string) => {
    result.failed.count++;
    if (result.failed.values.length < MAX_LISTED_KEYS) result.failed.values.push({ key, reason });
  };
  const { revision } = await readPrefix(client, {
    prefix: Buffer.from(selectionPrefix(options), 'utf8'),
    pageSize: 500,
    rate: 1_000_000_000,
    onPage: async (kvs, progress) => {
      for (const { key, value } of kvs) {
        const name = key.toString('utf8');
        const path = objectPath(name, options.prefix);
        if (options.resource !== undefined && path.resource !== options.resource) continue;
        if (options.namespace !== undefined && path.namespace !== options.namespace) continue;
        const parsed = readValue(value);
        if (parsed.kind === 'broker-undecodable')
          fail(name, "marked as the broker's but its envelopes do not decode");
        else if (parsed.kind !== 'kms-v2' && parsed.kind !== 'kms-v1') result.notOurs++;
        else await recoverValue(name, key, path, parsed);
      }
      options.onProgress?.(progress);
    },
  });

  async function recoverValue(
    name: string,
    key: Buffer,
    path: ObjectPath,
    value: BrokerValue,
  ): Promise<void> {
    if (!SAFE_NAME.test(path.name)) return fail(name, 'its name cannot be a file name');
    const { outcome } = await unwrapper.outcome(value);
    if (outcome.seed === undefined)
      return fail(
        name,
        `no source recovers its seed (${outcome.failures.map(f => `${f.source}: ${f.reason}`).join('; ')})`,
      );
    let plain: Buffer;
    try {
      plain =
        value.kind === 'kms-v2'
          ? decryptKmsV2(outcome.seed, value.sourceType ?? 0, value.encryptedData, key)
          : decryptKmsV1(outcome.seed, value.encryptedData, key);
    } catch {
      return fail(name, 'its data does not decrypt with the recovered seed');
    }
    try {
      const manifest = toManifest(plain);
      const dirs = [path.resource, path.namespace ?? CLUSTER_SCOPED];
      const written =
        manifest.format === 'yaml'
          ? writeNew(options.out, dirs, `${path.name}.yaml`, manifest.text)
          : writeNew(options.out, dirs, `${path.name}.pb`, manifest.bytes);
      if (!written) return fail(name, `${dirs.join('/')}/${path.name} exists already; not overwritten`);
      result.written[manifest.kind] = (result.written[manifest.kind] ?? 0) + 1;
      result.files++;
    } catch (error) {
      if ((error as { code?: unknown }).code === 'RECOVERY_OUTPUT_REFUSED') throw error;
      return fail(name, `decrypted, but not a Kubernetes object: ${(error as Error).message}`);
    } finally {
      plain.fill(0);
    }
  }

  return { ...result, revision };
}

interface ObjectPath {
  readonly resource: string;
  readonly namespace?: string | undefined;
  readonly name: string;
}

/** `<prefix><resource>/[<namespace>/]<name>`, with a group segment or a historical prefix as resource-name.ts reads them. */
export function objectPath(key: string, prefix: string): ObjectPath {
  const segments = key.slice(prefix.length).split('/');
  const [first = '', second = ''] = segments;
  const resourceSegments =
    TWO_SEGMENT_PREFIXES.has(`${first}/${second}`) || (first.includes('.') && segments.length > 2) ? 2 : 1;
  const rest = segments.slice(resourceSegments);
  return {
    resource: resourceOf(key, prefix),
    ...(rest.length >= 2 && { namespace: rest.at(-2) }),
    name: rest.at(-1) ?? '',
  };
}

/** The narrowest etcd prefix that holds the selection (the whole prefix when a group is named). */
function selectionPrefix(options: RecoverOptions): string {
  const { resource, namespace } = options;
  if (resource === undefined || resource.includes('.') || RENAMED.has(resource)) return options.prefix;
  return namespace === undefined
    ? `${options.prefix}${resource}/`
    : `${options.prefix}${resource}/${namespace}/`;
}
