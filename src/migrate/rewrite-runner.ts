// Re-encrypts one resource by rewriting its objects through the API, where no
// StorageVersionMigration controller does it: list in pages (limit/continue), PUT each object
// exactly as read (its resourceVersion included, so a concurrent change is never overwritten),
// re-read and retry on a conflict, skip what was deleted meanwhile, at a bounded rate. The
// apiserver writes an unchanged object only when its stored form is stale (another key_id), so
// a PUT of an object already under the current key_id costs a read and no write.
import { BrokerError } from '../errors.ts';
import { apiError, type KubeApi } from './kube-client.ts';
import { objectPath, type ServedResource } from './resources.ts';
import type { ResourceProgress } from './state.ts';

export interface RewriteOptions {
  /** Objects per second; 0 for no limit. */
  readonly rate: number;
  readonly pageSize: number;
  /** Re-reads after a conflict (or retries after 429/5xx) per object. */
  readonly maxAttempts?: number;
}

export interface RewriteHooks {
  /** Called after every object and page with what to keep in the state file. */
  save(progress: ResourceProgress): void;
  /** Objects rewritten so far (over all runs) and an estimate of the total. */
  progress?(done: number, total: number): void;
  readonly signal?: AbortSignal;
  /** Injected for tests. */
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface RewriteResult {
  /** Objects rewritten in this run. */
  readonly rewritten: number;
  /** Objects rewritten in earlier, interrupted runs (skipped in this one). */
  readonly resumedFrom: number;
  /** Deleted between the list and the write: nothing to re-encrypt. */
  readonly gone: number;
  /** Conflicts that were resolved by reading the object again. */
  readonly conflicts: number;
}

interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

interface KubeList {
  kind?: string;
  metadata?: { continue?: string; remainingItemCount?: number };
  items?: KubeObject[];
}

const DEFAULT_ATTEMPTS = 8;
/** Expired continue tokens tolerated in one run (each restarts the list) before giving up. */
const MAX_EXPIRATIONS = 20;
const RETRYABLE = new Set([429, 500, 502, 503, 504]);

const realSleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/** The object's position in list order: etcd keys are "<namespace>/<name>" or "<name>". */
export function listKey(object: KubeObject): string {
  const { namespace, name } = object.metadata ?? {};
  return namespace === undefined || namespace === '' ? (name ?? '') : `${namespace}/${name ?? ''}`;
}

/** A pacer: resolves once per 1/rate seconds, never bursting past the rate. */
export function pacer(rate: number, now: () => number, sleep: (ms: number) => Promise<void>) {
  const interval = rate > 0 ? 1000 / rate : 0;
  let next = 0;
  return async () => {
    if (interval === 0) return;
    const at = Math.max(now(), next);
    next = at + interval;
    const wait = at - now();
    if (wait > 0) await sleep(wait);
  };
}

export async function rewriteResource(
  api: KubeApi,
  resource: ServedResource,
  start: ResourceProgress | undefined,
  options: RewriteOptions,
  hooks: RewriteHooks,
): Promise<RewriteResult> {
  const now = hooks.now ?? Date.now;
  const sleep = hooks.sleep ?? realSleep;
  const pace = pacer(options.rate, now, sleep);
  const attempts = options.maxAttempts ?? DEFAULT_ATTEMPTS;
  const apiVersion = resource.group === '' ? resource.version : `${resource.group}/${resource.version}`;
  const resumedFrom = start?.rewritten ?? 0;
  let pageContinue = start?.pageContinue ?? '';
  let lastDone = start?.lastDone;
  let total = resumedFrom;
  const counts = { rewritten: 0, gone: 0, conflicts: 0 };
  let expirations = 0;

  const save = (done: boolean) =>
    hooks.save({
      mode: 'rewrite',
      done,
      pageContinue,
      ...(lastDone !== undefined && { lastDone }),
      rewritten: resumedFrom + counts.rewritten,
    });

  /** PUT the object as read; re-read on a conflict. 'gone' when it was deleted meanwhile. */
  const rewriteOne = async (listed: KubeObject, kind: string): Promise<'rewritten' | 'gone'> => {
    const path = objectPath(resource, listed.metadata?.namespace, listed.metadata?.name ?? '');
    let object: KubeObject = { ...listed, apiVersion, kind };
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const put = await api.request('PUT', path, object);
      if (put.status >= 200 && put.status <= 299) return 'rewritten';
      if (put.status === 404) return 'gone';
      if (put.status === 409) {
        counts.conflicts++;
        const fresh = await api.request('GET', path);
        if (fresh.status === 404) return 'gone';
        if (fresh.status !== 200) throw apiError('GET', path, fresh);
        object = { ...(fresh.body as KubeObject), apiVersion, kind };
        continue;
      }
      if (RETRYABLE.has(put.status) && attempt < attempts) {
        await sleep(Math.min(100 * 2 ** attempt, 5000));
        continue;
      }
      throw apiError('PUT', path, put, put.status === 403 ? 'the kubeconfig user needs update rights' : '');
    }
    throw new BrokerError(
      'MIGRATION_FAILED',
      `${path}: still changing after ${attempts} attempts to rewrite it; run migrate again when writes to it calm down`,
    );
  };

  for (;;) {
    hooks.signal?.throwIfAborted();
    const query = new URLSearchParams({ limit: String(options.pageSize) });
    if (pageContinue !== '') query.set('continue', pageContinue);
    const response = await api.request('GET', `${resource.listPath}?${query.toString()}`);
    if (response.status === 410 && pageContinue !== '' && expirations++ < MAX_EXPIRATIONS) {
      // The continue token expired (etcd compacted past it): list from the start again and
      // skip, by list order, everything up to the last object done.
      pageContinue = '';
      continue;
    }
    if (response.status !== 200) throw apiError('GET', resource.listPath, response);
    const list = response.body as KubeList;
    const kind = (list.kind ?? '').replace(/List$/, '');
    const items = list.items ?? [];
    const remaining = list.metadata?.remainingItemCount ?? 0;
    const left = items.filter(item => lastDone === undefined || listKey(item) > lastDone).length;
    total = Math.max(total, resumedFrom + counts.rewritten + counts.gone + left + remaining);
    hooks.progress?.(resumedFrom + counts.rewritten, total);
    for (const item of items) {
      const key = listKey(item);
      if (lastDone !== undefined && key <= lastDone) continue;
      hooks.signal?.throwIfAborted();
      await pace();
      if ((await rewriteOne(item, kind)) === 'rewritten') counts.rewritten++;
      else counts.gone++;
      lastDone = key;
      save(false);
      hooks.progress?.(resumedFrom + counts.rewritten, total);
    }
    const next = list.metadata?.continue ?? '';
    if (next === '') break;
    pageContinue = next;
    save(false);
  }
  save(true);
  return { rewritten: counts.rewritten, resumedFrom, gone: counts.gone, conflicts: counts.conflicts };
}
