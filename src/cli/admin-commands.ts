// CLI commands over the admin API: status, backends, keys, rotate, retire, restore,
// failover. Human tables by default, `--json` for scripts. Exit codes: 0 done, 1 the broker
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
import { table } from './table.ts';

export interface OutputOptions extends AdminOptions {
  readonly json?: boolean;
}

interface StatusBody {
  keyId: string;
  healthz: string;
  kmsApiVersion: string;
  writeVersions: Record<string, string>;
  failover: { order: string[]; wrap: string };
  degraded: string[];
  underReplicatedKeyIds: string[];
  uptimeSeconds: number;
  version: string;
  cluster?: { etcdReachable: boolean; converged: boolean; members: number };
}

/** `status` exits 1 when Status is not healthy (the apiserver's writes fail). */
const EXIT_UNHEALTHY = 1;
/**
 * `status` exits 5 when the broker serves but a backend is down, seeds went out without some
 * backends' wraps, or (with a shared state) etcd does not answer or the brokers disagree:
 * nothing fails yet, and the next outage may. A distinct code, so that
 * a monitoring script can page on it without parsing text.
 */
const EXIT_DEGRADED = 5;
interface BackendsBody {
  backends: {
    name: string;
    type: string;
    healthy: boolean;
    breaker: string;
    reason?: string;
    lastProbeAt?: string;
    lastProbeMs?: number;
    errors: Record<string, number>;
    writeVersion?: string;
  }[];
}
interface KeysBody {
  backends: Record<
    string,
    {
      version: string;
      role: string;
      createdAt: string;
      lastDecryptAt?: string;
      decryptCount: number;
      decryptsSinceStart: number;
    }[]
  >;
}

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

function print(options: OutputOptions, body: unknown, human: () => string): void {
  process.stdout.write(options.json === true ? `${JSON.stringify(body, null, 2)}\n` : human());
}

/**
 * Prints Status, and returns the exit code that sums it up: 0 all healthy, 1 not healthy,
 * EXIT_DEGRADED serving while degraded.
 */
export async function statusCommand(options: OutputOptions): Promise<number> {
  const { body } = await call(resolveTarget(options, 'viewer'), 'GET', '/v1/status');
  const status = body as StatusBody;
  const { degraded, underReplicatedKeyIds } = status;
  print(options, status, () =>
    table(
      ['FIELD', 'VALUE'],
      [
        ['key_id', status.keyId],
        ['healthz', status.healthz],
        ['degraded', degraded.length === 0 ? '-' : `${degraded.join(' ')} (see kms-broker backends)`],
        ['under-replicated', underReplicatedKeyIds.join(' ') || '-'],
        [
          'write versions',
          Object.entries(status.writeVersions)
            .map(([backend, version]) => `${backend}=${version}`)
            .join(' '),
        ],
        ['failover', `${status.failover.order.join(',')} (wrap: ${status.failover.wrap})`],
        ...(status.cluster === undefined
          ? []
          : [
              [
                'cluster',
                `${status.cluster.members} brokers, ${status.cluster.converged ? 'converged' : 'NOT converged'}, etcd ${status.cluster.etcdReachable ? 'reachable' : 'UNREACHABLE'} (see status --cluster)`,
              ],
            ]),
        ['uptime', `${status.uptimeSeconds}s`],
        ['version', status.version],
      ],
    ),
  );
  if (status.healthz !== 'ok') return EXIT_UNHEALTHY;
  const clusterDegraded =
    status.cluster !== undefined && !(status.cluster.converged && status.cluster.etcdReachable);
  return degraded.length > 0 || underReplicatedKeyIds.length > 0 || clusterDegraded ? EXIT_DEGRADED : 0;
}

export async function backendsCommand(options: OutputOptions): Promise<void> {
  const { body } = await call(resolveTarget(options, 'viewer'), 'GET', '/v1/backends');
  const { backends } = body as BackendsBody;
  print(options, body, () =>
    table(
      ['NAME', 'TYPE', 'HEALTH', 'BREAKER', 'WRITE', 'LAST PROBE', 'LATENCY', 'ERRORS'],
      backends.map(backend => [
        backend.name,
        backend.type,
        backend.healthy ? 'ok' : `unhealthy (${backend.reason ?? '?'})`,
        backend.breaker,
        backend.writeVersion ?? '-',
        backend.lastProbeAt ?? '-',
        backend.lastProbeMs === undefined ? '-' : `${backend.lastProbeMs}ms`,
        Object.entries(backend.errors)
          .map(([code, count]) => `${code}=${count}`)
          .join(' ') || '-',
      ]),
    ),
  );
}

export async function keysCommand(options: OutputOptions): Promise<void> {
  const { body } = await call(resolveTarget(options, 'viewer'), 'GET', '/v1/keys');
  const { backends } = body as KeysBody;
  print(options, body, () =>
    table(
      ['BACKEND', 'VERSION', 'ROLE', 'CREATED', 'LAST DECRYPT', 'DECRYPTS', 'SINCE START'],
      Object.entries(backends).flatMap(([backend, versions]) =>
        versions.map(version => [
          backend,
          version.version,
          version.role,
          version.createdAt,
          version.lastDecryptAt ?? '-',
          String(version.decryptCount),
          String(version.decryptsSinceStart),
        ]),
      ),
    ),
  );
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
  const target = resolveTarget(options, 'admin');
  const name = backend ?? (await defaultRotationBackend(target));
  const { body } = await call(target, 'POST', `/v1/backends/${encodeURIComponent(name)}/rotate`);
  const result = body as { backend: string; version: string; keyId: string };
  print(
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
  const { body } = await call(resolveTarget(options, 'admin'), 'POST', path);
  const result = body as { backend: string; version: string; state: string; forced: boolean };
  print(
    options,
    result,
    () =>
      `${result.backend} version ${result.version} is ${result.state}${result.forced ? ' (forced)' : ''}\n`,
  );
}

export async function failoverGetCommand(options: OutputOptions): Promise<void> {
  const { body } = await call(resolveTarget(options, 'viewer'), 'GET', '/v1/failover');
  const failover = body as { order: string[]; wrap: string };
  print(options, failover, () => `order: ${failover.order.join(',')}\nwrap:  ${failover.wrap}\n`);
}

export async function failoverSetCommand(
  order: string,
  options: OutputOptions & { wrap?: string },
): Promise<void> {
  const target = resolveTarget(options, 'admin');
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
  print(
    options,
    result,
    () => `failover is now ${result.order.join(',')} (wrap: ${result.wrap}); key_id ${result.keyId}\n`,
  );
}
