// CLI commands over the admin API: status, backends, keys, rotate, retire, restore,
// failover. Tables by default, `-o wide|json|yaml` (`--json` for scripts), --watch on reads. Exit codes: 0 done, 1 the broker
// refused or failed the request, 2 usage, 3 the broker could not be reached; `status` also
// says how healthy the broker is (see statusCommand).
import { BrokerError } from '../errors.ts';
import {
  request,
  resolveTarget,
  type AdminOptions,
  type AdminResponse,
  type AdminTarget,
} from './admin-client.ts';
import { documentOf, formatOf, type FormatOptions } from './output.ts';
import { printable, type ReadView } from './read-view.ts';
import {
  backendsListing,
  keysListing,
  statusListing,
  type BackendsBody,
  type KeysBody,
  type StatusBody,
} from './views.ts';
import type { WatchOptions } from './watch-options.ts';

export interface OutputOptions extends AdminOptions, FormatOptions {}

/** The read commands' options: a format, and --watch with its --interval. */
export interface ReadOptions extends OutputOptions, WatchOptions {}

/** `status` exits 1 when Status is not healthy (the apiserver's writes fail). */
const EXIT_UNHEALTHY = 1;
/**
 * `status` exits 5 when the broker serves but a backend is down, seeds went out without some
 * backends' wraps, or (with a shared state) etcd does not answer or the brokers disagree:
 * nothing fails yet, and the next outage may. A distinct code, so that
 * a monitoring script can page on it without parsing text.
 */
const EXIT_DEGRADED = 5;

const statusView: ReadView<StatusBody> = { name: 'status', path: '/v1/status', listing: statusListing };
const backendsView: ReadView<BackendsBody> = {
  name: 'backends',
  path: '/v1/backends',
  listing: backendsListing,
};
const keysView: ReadView<KeysBody> = { name: 'keys', path: '/v1/keys', listing: keysListing };

/** A refused request, printed as one line: `kms-broker: CODE: detail`. */
class RequestRefused extends BrokerError {}

/** An admin API request; a refusal throws the broker's problem (code and detail) as a BrokerError. */
export async function call(
  target: AdminTarget,
  method: string,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
): Promise<AdminResponse> {
  const response = await request(target, method, path, body, headers);
  if (response.status >= 400) {
    const problem = response.body as { code?: string; detail?: string };
    const code = (problem.code ?? 'INTERNAL') as BrokerError['code'];
    throw new RequestRefused(code, problem.detail ?? `HTTP ${response.status}`);
  }
  return response;
}

async function print(options: OutputOptions, body: unknown, human: () => string): Promise<void> {
  const format = formatOf(options);
  process.stdout.write(format === 'json' || format === 'yaml' ? await documentOf(format, body) : human());
}

/** Reads the view's answer and prints it, or with --watch keeps doing so until Ctrl-C. */
async function show<Body>(view: ReadView<Body>, options: ReadOptions): Promise<Body> {
  const target = await resolveTarget(options, 'viewer');
  const fetch = async () => (await call(target, 'GET', view.path)).body as Body;
  if (options.watch === true) return (await import('./watch.ts')).watch(view, target, fetch, options);
  const body = await fetch();
  process.stdout.write(await printable(view, body, formatOf(options), Date.now()));
  return body;
}

/**
 * Prints Status, and returns the exit code that sums it up: 0 all healthy, 1 not healthy,
 * EXIT_DEGRADED serving while degraded.
 */
export async function statusCommand(options: ReadOptions): Promise<number> {
  const status = await show(statusView, options);
  const { degraded, underReplicatedKeyIds } = status;
  if (status.healthz !== 'ok') return EXIT_UNHEALTHY;
  const clusterDegraded =
    status.cluster !== undefined && !(status.cluster.converged && status.cluster.etcdReachable);
  return degraded.length > 0 || underReplicatedKeyIds.length > 0 || clusterDegraded ? EXIT_DEGRADED : 0;
}

export async function backendsCommand(options: ReadOptions): Promise<void> {
  await show(backendsView, options);
}

export async function keysCommand(options: ReadOptions): Promise<void> {
  await show(keysView, options);
}

/**
 * The backend `rotate` means when none is named: the first of the failover order that holds
 * keys of its own (an escrow key is made offline, not rotated here).
 */
export async function defaultRotationBackend(target: AdminTarget): Promise<string> {
  const { order } = (await call(target, 'GET', '/v1/failover')).body as { order: string[] };
  const { backends } = (await call(target, 'GET', '/v1/backends')).body as {
    backends: { name: string; writeOnly?: true }[];
  };
  const writeOnly = new Set(
    backends.filter(backend => backend.writeOnly === true).map(backend => backend.name),
  );
  return order.find(name => !writeOnly.has(name)) ?? '';
}

export async function rotateCommand(backend: string | undefined, options: OutputOptions): Promise<void> {
  const target = await resolveTarget(options, 'admin');
  const name = backend ?? (await defaultRotationBackend(target));
  const { body } = await call(target, 'POST', `/v1/backends/${encodeURIComponent(name)}/rotate`);
  const result = body as { backend: string; version: string; keyId: string };
  await print(
    options,
    result,
    () => `rotated ${result.backend} to version ${result.version}; key_id is now ${result.keyId}\n`,
  );
}

export async function versionStateCommand(
  action: 'retire' | 'restore',
  backend: string,
  version: string,
  options: OutputOptions & { force?: boolean },
): Promise<void> {
  const query = action === 'retire' && options.force === true ? '?force=true' : '';
  const path = `/v1/backends/${encodeURIComponent(backend)}/versions/${encodeURIComponent(version)}/${action}${query}`;
  const { body } = await call(await resolveTarget(options, 'admin'), 'POST', path);
  const result = body as { backend: string; version: string; state: string; forced: boolean };
  await print(
    options,
    result,
    () =>
      `${result.backend} version ${result.version} is ${result.state}${result.forced ? ' (forced)' : ''}\n`,
  );
}

export async function failoverGetCommand(options: OutputOptions): Promise<void> {
  const { body } = await call(await resolveTarget(options, 'viewer'), 'GET', '/v1/failover');
  const failover = body as { order: string[]; wrap: string };
  await print(options, failover, () => `order: ${failover.order.join(',')}\nwrap:  ${failover.wrap}\n`);
}

export async function failoverSetCommand(
  order: string,
  options: OutputOptions & { wrap?: string },
): Promise<void> {
  const target = await resolveTarget(options, 'admin');
  const current = await call(target, 'GET', '/v1/failover');
  const etag = current.headers.etag;
  const wrap = options.wrap ?? (current.body as { wrap: string }).wrap;
  const names = order
    .split(',')
    .map(name => name.trim())
    .filter(name => name !== '');
  const { body } = await call(
    target,
    'PUT',
    '/v1/failover',
    { order: names, wrap },
    etag === undefined ? {} : { 'if-match': etag },
  );
  const result = body as { order: string[]; wrap: string; keyId: string };
  await print(
    options,
    result,
    () => `failover is now ${result.order.join(',')} (wrap: ${result.wrap}); key_id ${result.keyId}\n`,
  );
}
