// `runMigration`: re-encrypt the stored objects of some resources under the broker's current
// key_id. It is the whole of `kms-broker migrate` without the command line, so that other
// commands (rotate --complete) can run it: the broker's key_id and the Kubernetes API come in
// as dependencies, the result goes out as a value, progress goes to a Progress.
import type { KubeApi } from './kube-client.ts';
import { silentProgress, type Progress } from './progress.ts';
import { discover, formatResource, MigrateInputError, type GroupResource } from './resources.ts';
import { waitForReseed } from './reseed-wait.ts';
import { rewriteResource } from './rewrite-runner.ts';
import { openState, keyIdHash as hashOf } from './state.ts';
import { runSvm, svmVersion } from './svm-runner.ts';

export interface MigrationOptions {
  readonly resources: readonly GroupResource[];
  /** auto: a StorageVersionMigration where the cluster serves the API, else rewrite. */
  readonly mode: 'auto' | 'svm' | 'rewrite';
  /** Apiservers to check for the new key_id (base URLs); default: the kubeconfig's server. */
  readonly apiservers?: readonly string[];
  /** Wait until every apiserver writes under the key_id (false: --no-wait). */
  readonly wait: boolean;
  readonly waitTimeoutMs: number;
  /** Rewrite mode: objects per second (0: no limit) and list page size. */
  readonly rate: number;
  readonly pageSize: number;
  /** SVM mode: how long to follow one migration. */
  readonly migrationTimeoutMs: number;
  readonly statePath: string;
  readonly signal?: AbortSignal;
}

export interface MigrationDeps {
  readonly kube: KubeApi;
  /** The broker's current key_id (admin API GET /v1/status → keyId). */
  keyId(): Promise<string>;
  readonly progress?: Progress;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface ResourceResult {
  readonly resource: string;
  readonly mode: 'svm' | 'rewrite';
  /** already-done: an earlier run for this key_id finished it; nothing was done now. */
  readonly status: 'migrated' | 'already-done';
  readonly durationMs: number;
  /** Rewrite: objects rewritten now, in earlier interrupted runs, deleted meanwhile, conflicts. */
  readonly rewritten?: number;
  readonly resumedFrom?: number;
  readonly gone?: number;
  readonly conflicts?: number;
  /** SVM: the StorageVersionMigration and the object count its controller reported. */
  readonly migration?: string;
  readonly objects?: number;
}

export interface MigrationResult {
  readonly keyId: string;
  readonly keyIdHash: string;
  readonly server: string;
  /** True when every resource was already done for this key_id: the run changed nothing. */
  readonly alreadyDone: boolean;
  readonly resources: readonly ResourceResult[];
  readonly statePath: string;
  readonly durationMs: number;
}

export async function runMigration(options: MigrationOptions, deps: MigrationDeps): Promise<MigrationResult> {
  const now = deps.now ?? Date.now;
  const progress = deps.progress ?? silentProgress;
  const started = now();
  const keyId = await deps.keyId();
  const hash = hashOf(keyId);
  const { kube } = deps;
  const state = openState(options.statePath, kube.server, keyId);
  const names = options.resources.map(formatResource);
  const done = () => state.get()?.resources ?? {};
  const result = (resources: ResourceResult[]): MigrationResult => ({
    keyId,
    keyIdHash: hash,
    server: kube.server,
    alreadyDone: resources.every(entry => entry.status === 'already-done'),
    resources,
    statePath: state.path,
    durationMs: now() - started,
  });
  const alreadyDone = (name: string): ResourceResult | undefined => {
    const entry = done()[name];
    return entry?.done === true
      ? {
          resource: name,
          mode: entry.mode,
          status: 'already-done',
          durationMs: 0,
          ...(entry.migration !== undefined && { migration: entry.migration }),
        }
      : undefined;
  };

  // A finished migration for this key_id: say so and touch nothing (no wait, no API calls).
  const previous = names.map(alreadyDone);
  if (previous.every(entry => entry !== undefined)) return result(previous);

  const version = options.mode === 'rewrite' ? undefined : await svmVersion(kube);
  if (options.mode === 'svm' && version === undefined)
    throw new MigrateInputError(
      `--mode svm: ${kube.server} serves no storagemigration.k8s.io API (v1 or v1beta1); use --mode rewrite, or enable the API (--runtime-config=storagemigration.k8s.io/v1=true)`,
    );
  const served = [];
  for (const resource of options.resources) served.push(await discover(kube, resource));

  if (options.wait) {
    const servers = options.apiservers ?? [kube.server];
    progress.note(`waiting for ${servers.length} apiserver(s) to pick up key_id ${keyId}`);
    await waitForReseed(kube, servers, keyId, hash, {
      timeoutMs: options.waitTimeoutMs,
      ...(options.signal !== undefined && { signal: options.signal }),
      ...(deps.now !== undefined && { now: deps.now }),
      ...(deps.sleep !== undefined && { sleep: deps.sleep }),
      onReady: (server, waitedMs) =>
        progress.note(`${server} writes under the key_id (after ${Math.round(waitedMs / 1000)} s)`),
    });
  }

  const results: ResourceResult[] = [];
  for (const resource of served) {
    const name = formatResource(resource);
    const finished = alreadyDone(name);
    if (finished !== undefined) {
      results.push(finished);
      progress.end(name, 'already done for this key_id');
      continue;
    }
    const resourceStarted = now();
    const save = (entry: Parameters<typeof state.update>[1]) => state.update(name, entry);
    const update = (count: number, total: number) => progress.update(name, count, total);
    const common = {
      ...(options.signal !== undefined && { signal: options.signal }),
      ...(deps.now !== undefined && { now: deps.now }),
      ...(deps.sleep !== undefined && { sleep: deps.sleep }),
    };
    if (version !== undefined) {
      progress.begin(name, 0);
      const svm = await runSvm(kube, version, resource, hash, {
        save,
        progress: update,
        timeoutMs: options.migrationTimeoutMs,
        ...common,
      });
      results.push({
        resource: name,
        mode: 'svm',
        status: svm.alreadyDone ? 'already-done' : 'migrated',
        durationMs: now() - resourceStarted,
        migration: svm.migration,
        ...(svm.objects !== undefined && { objects: svm.objects }),
      });
      progress.end(name, `StorageVersionMigration ${svm.migration} succeeded`);
    } else {
      const start = done()[name];
      const resumed = start?.mode === 'rewrite' ? start : undefined;
      if (resumed !== undefined)
        progress.note(
          `${name}: resuming after ${resumed.lastDone ?? 'the start'} (${resumed.rewritten ?? 0} done)`,
        );
      progress.begin(name, 0);
      const rewrite = await rewriteResource(
        kube,
        resource,
        resumed,
        { rate: options.rate, pageSize: options.pageSize },
        { save, progress: update, ...common },
      );
      results.push({
        resource: name,
        mode: 'rewrite',
        status: 'migrated',
        durationMs: now() - resourceStarted,
        ...rewrite,
      });
      progress.end(
        name,
        `${rewrite.rewritten} objects rewritten${rewrite.resumedFrom > 0 ? ` (${rewrite.resumedFrom} before)` : ''}`,
      );
    }
  }
  state.finish();
  return result(results);
}
