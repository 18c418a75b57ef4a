// The tables of the read commands (status, backends, keys) built from the admin API's answers:
// `table` fits 80 columns with relative ages; `wide` adds full timestamps, reasons and counts.
// Each row also carries its `stable` content, without what changes on every poll (ages,
// latencies, uptime), so that `--watch` can tell a change from the clock ticking.
import { age, duration } from './output.ts';
import { table } from './table.ts';

export interface StatusBody {
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

export interface BackendsBody {
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
    writeOnly?: true;
  }[];
}

export interface KeysBody {
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

export interface Row {
  readonly cells: readonly string[];
  /** The row without its per-poll cells; undefined: the row is all clock (uptime). */
  readonly stable: string | undefined;
}

export interface Listing {
  readonly headers: readonly string[];
  readonly rows: readonly Row[];
}

/** How a listing is drawn: wide or not, and the time ages count from. */
export interface ViewContext {
  readonly wide: boolean;
  readonly now: number;
}

export function render(listing: Listing): string {
  return table(
    listing.headers,
    listing.rows.map(row => row.cells),
  );
}

/**
 * A key version as a default table shows it: HSM, Transit and cloud versions are short numbers,
 * but an Azure Key Vault version is a 32-character id that alone would push a row past 80
 * columns; its head tells versions apart as a short git hash does, `-o wide` and `-o json`
 * give it whole.
 */
const VERSION_WIDTH = 8;
export function shortVersion(version: string, wide: boolean): string {
  return wide || version.length <= VERSION_WIDTH ? version : `${version.slice(0, VERSION_WIDTH - 1)}…`;
}

const row = (cells: readonly string[], stable: string = cells.join('\u0000')): Row => ({ cells, stable });
/** A row that is all clock (uptime): never a change for --watch. */
const clockRow = (cells: readonly string[]): Row => ({ cells, stable: undefined });

export function statusListing(status: StatusBody, { wide, now }: ViewContext): Listing {
  const { degraded, underReplicatedKeyIds: thin } = status;
  const uptime = wide
    ? `${status.uptimeSeconds}s (since ${new Date(now - status.uptimeSeconds * 1000).toISOString()})`
    : duration(status.uptimeSeconds * 1000);
  const rows: Row[] = [
    row(['key_id', status.keyId]),
    row(['healthz', status.healthz]),
    row(['degraded', degraded.length === 0 ? '-' : `${degraded.join(' ')} (see kms-broker backends)`]),
    // A key_id is 48 characters: more than one does not fit a line, `-o wide` lists them all.
    row([
      'under-replicated',
      thin.length === 0 ? '-' : wide || thin.length === 1 ? thin.join(' ') : `${thin.length} seeds (-o wide)`,
    ]),
    row([
      'write versions',
      Object.entries(status.writeVersions)
        .map(([backend, version]) => `${backend}=${shortVersion(version, wide)}`)
        .join(' '),
    ]),
    row(['failover', `${status.failover.order.join(',')} (wrap: ${status.failover.wrap})`]),
  ];
  if (status.cluster !== undefined) {
    const { members, converged, etcdReachable } = status.cluster;
    rows.push(
      row([
        'cluster',
        `${members} brokers, ${converged ? 'converged' : 'NOT converged'}, etcd ${etcdReachable ? 'reachable' : 'UNREACHABLE'}`,
      ]),
    );
  }
  if (wide) rows.push(row(['kms api', status.kmsApiVersion]));
  rows.push(clockRow(['uptime', uptime]), row(['version', status.version]));
  return { headers: ['FIELD', 'VALUE'], rows };
}

export function backendsListing({ backends }: BackendsBody, { wide, now }: ViewContext): Listing {
  // The probe's latency and the reason of a failure are diagnostics: in wide, so that the
  // default fits 80 columns with backend names of up to 16 characters.
  const headers = wide
    ? ['NAME', 'TYPE', 'HEALTH', 'BREAKER', 'WRITE', 'LAST PROBE', 'LATENCY', 'ERRORS', 'REASON']
    : ['NAME', 'TYPE', 'HEALTH', 'BREAKER', 'WRITE', 'PROBED', 'ERRORS'];
  const rows = backends.map(backend => {
    const errors = Object.entries(backend.errors);
    const errorCell = wide
      ? errors.map(([code, count]) => `${code}=${count}`).join(' ') || '-'
      : String(errors.reduce((sum, [, count]) => sum + count, 0));
    const stable = [
      backend.name,
      backend.type,
      backend.healthy ? 'ok' : 'unhealthy',
      backend.breaker,
      backend.writeVersion === undefined ? '-' : shortVersion(backend.writeVersion, wide),
      errorCell,
      ...(wide ? [backend.reason ?? '-'] : []),
    ];
    const [name, type, health, breaker, write] = stable as [string, string, string, string, string];
    const cells = [
      name,
      type,
      health,
      breaker,
      write,
      wide ? (backend.lastProbeAt ?? '-') : age(backend.lastProbeAt, now),
      ...(wide ? [backend.lastProbeMs === undefined ? '-' : `${backend.lastProbeMs}ms`] : []),
      errorCell,
      ...(wide ? [backend.reason ?? '-'] : []),
    ];
    return row(cells, stable.join('\u0000'));
  });
  return { headers, rows };
}

export function keysListing({ backends }: KeysBody, { wide, now }: ViewContext): Listing {
  const headers = wide
    ? ['BACKEND', 'VERSION', 'ROLE', 'CREATED', 'LAST DECRYPT', 'DECRYPTS', 'SINCE START']
    : ['BACKEND', 'VERSION', 'ROLE', 'AGE', 'LAST DECRYPT', 'DECRYPTS'];
  const rows = Object.entries(backends).flatMap(([backend, versions]) =>
    versions.map(version => {
      // Decrypts count as a change: the apiserver decrypts rarely (it caches DEKs), and a
      // version that is still read is what one watches for before retiring it.
      const stable = [backend, version.version, version.role, version.decryptCount].join('\u0000');
      const cells = wide
        ? [
            backend,
            version.version,
            version.role,
            version.createdAt,
            version.lastDecryptAt ?? '-',
            String(version.decryptCount),
            String(version.decryptsSinceStart),
          ]
        : [
            backend,
            shortVersion(version.version, false),
            version.role,
            age(version.createdAt, now),
            version.lastDecryptAt === undefined ? '-' : `${age(version.lastDecryptAt, now)} ago`,
            String(version.decryptCount),
          ];
      return row(cells, stable);
    }),
  );
  return { headers, rows };
}
