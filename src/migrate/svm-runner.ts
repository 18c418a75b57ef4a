// Re-encrypts one resource through a StorageVersionMigration (storagemigration.k8s.io, GA as v1
// in 1.37), run by kube-controller-manager's storage-version-migrator controller. The name is
// derived from the resource and the key_id's hash, so a rerun for the same key_id finds its
// own migration (and a finished one is a no-op), while the next rotation gets a new one.
import { BrokerError } from '../errors.ts';
import { apiError, must, type KubeApi } from './kube-client.ts';
import { formatResource, type GroupResource } from './resources.ts';
import type { ResourceProgress } from './state.ts';

export const SVM_GROUP = 'storagemigration.k8s.io';
const PREFERRED_VERSIONS = ['v1', 'v1beta1'] as const;
export type SvmVersion = (typeof PREFERRED_VERSIONS)[number];

export interface SvmHooks {
  save(progress: ResourceProgress): void;
  /** Objects migrated and the total, when the controller says. */
  progress?(done: number, total: number): void;
  readonly signal?: AbortSignal;
  /** How long to follow one migration before giving up (it keeps running in the cluster). */
  readonly timeoutMs: number;
  readonly pollMs?: number;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface SvmResult {
  readonly migration: string;
  /** It had already succeeded (an earlier run for this key_id): nothing was done. */
  readonly alreadyDone: boolean;
  /** The object count the controller reported, if it did. */
  readonly objects?: number;
}

interface Condition {
  type?: string;
  status?: string;
  message?: string;
}

interface Migration {
  status?: { conditions?: Condition[] };
}

const realSleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/** The version of the migration API the cluster serves (v1 preferred), or undefined. */
export async function svmVersion(api: KubeApi): Promise<SvmVersion | undefined> {
  const response = await api.request('GET', `/apis/${SVM_GROUP}`);
  if (response.status === 404) return undefined;
  if (response.status !== 200) throw apiError('GET', `/apis/${SVM_GROUP}`, response);
  const served = new Set(
    ((response.body as { versions?: { version?: string }[] }).versions ?? []).map(entry => entry.version),
  );
  return PREFERRED_VERSIONS.find(version => served.has(version));
}

/** `kms-broker-<resource>-<16 hex of the key_id hash>`: a valid, stable object name. */
export function migrationName(resource: GroupResource, keyIdHash: string): string {
  const hex = keyIdHash.replace(/^sha256:/, '').slice(0, 16);
  return `kms-broker-${formatResource(resource)}-${hex}`;
}

const condition = (migration: Migration, type: string) =>
  migration.status?.conditions?.find(entry => entry.type === type && entry.status === 'True');

/** "…, 3/200 objects not yet migrated" or "…, 200 objects verified migrated". */
export function parseRunningMessage(message: string): { done: number; total: number } | undefined {
  const pending = /(\d+)\/(\d+) objects not yet migrated/.exec(message);
  if (pending !== null) return { done: Number(pending[2]) - Number(pending[1]), total: Number(pending[2]) };
  const verified = /(\d+) objects verified migrated/.exec(message);
  if (verified !== null) return { done: Number(verified[1]), total: Number(verified[1]) };
  return undefined;
}

export async function runSvm(
  api: KubeApi,
  version: SvmVersion,
  resource: GroupResource,
  keyIdHash: string,
  hooks: SvmHooks,
): Promise<SvmResult> {
  const now = hooks.now ?? Date.now;
  const sleep = hooks.sleep ?? realSleep;
  const pollMs = hooks.pollMs ?? 1000;
  const name = migrationName(resource, keyIdHash);
  const collection = `/apis/${SVM_GROUP}/${version}/storageversionmigrations`;
  const path = `${collection}/${name}`;
  const body = {
    apiVersion: `${SVM_GROUP}/${version}`,
    kind: 'StorageVersionMigration',
    metadata: {
      name,
      labels: { 'app.kubernetes.io/managed-by': 'kms-broker' },
      annotations: { 'kms-broker.io/key-id-hash': keyIdHash },
    },
    spec: { resource: { group: resource.group, resource: resource.resource } },
  };

  let existing = await api.request('GET', path);
  if (existing.status === 200 && condition(existing.body as Migration, 'Succeeded') !== undefined) {
    hooks.save({ mode: 'svm', done: true, migration: name });
    return { migration: name, alreadyDone: true };
  }
  if (existing.status === 200 && condition(existing.body as Migration, 'Failed') !== undefined) {
    // A failed migration is final for the controller; running migrate again is the retry.
    await must(api, 'DELETE', path);
    existing = { status: 404, body: undefined, text: '' };
  }
  if (existing.status === 404) {
    const created = await api.request('POST', collection, body);
    // 409: created meanwhile (a concurrent run, or the old one still being deleted): follow it.
    if (created.status !== 201 && created.status !== 200 && created.status !== 409)
      throw apiError('POST', collection, created);
  } else if (existing.status !== 200) throw apiError('GET', path, existing);
  hooks.save({ mode: 'svm', done: false, migration: name });

  const deadline = now() + hooks.timeoutMs;
  for (let polls = 0; now() < deadline && polls <= hooks.timeoutMs / pollMs + 1; polls++) {
    hooks.signal?.throwIfAborted();
    const response = await api.request('GET', path);
    if (response.status === 404) {
      // Deleted by someone else (or our failed one still going): create it once more.
      const created = await api.request('POST', collection, body);
      if (created.status !== 201 && created.status !== 409) throw apiError('POST', collection, created);
    } else if (response.status !== 200) throw apiError('GET', path, response);
    else {
      const migration = response.body as Migration;
      const running = condition(migration, 'Running');
      const counted = parseRunningMessage(running?.message ?? '');
      if (counted !== undefined) hooks.progress?.(counted.done, counted.total);
      if (condition(migration, 'Succeeded') !== undefined) {
        hooks.save({ mode: 'svm', done: true, migration: name });
        return {
          migration: name,
          alreadyDone: false,
          ...(counted !== undefined && { objects: counted.total }),
        };
      }
      const failed = condition(migration, 'Failed');
      if (failed !== undefined)
        throw new BrokerError(
          'MIGRATION_FAILED',
          `StorageVersionMigration ${name} (${formatResource(resource)}) failed: ${failed.message ?? 'no message'}; see kube-controller-manager's log, fix the cause and run migrate again (it replaces a failed migration), or use --mode rewrite`,
        );
    }
    await sleep(pollMs);
  }
  throw new BrokerError(
    'MIGRATION_FAILED',
    `StorageVersionMigration ${name} (${formatResource(resource)}) did not finish within ${Math.round(hooks.timeoutMs / 1000)} s; is kube-controller-manager running with the storage-version-migrator-controller? Run migrate again to keep following it, or use --mode rewrite`,
  );
}
