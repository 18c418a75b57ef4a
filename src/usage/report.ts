// What an operator reads after a scan: which key versions stored data needs, and what is at
// risk. Built as sections of text and tables from a UsageScan and the broker's configured
// backends; the CLI lays the tables out.
import { STORED_FORMATS, type UsageScan } from '../broker/usage-scan.ts';

export interface Section {
  readonly title: string;
  readonly lines?: readonly string[];
  readonly table?: { readonly headers: readonly string[]; readonly rows: readonly (readonly string[])[] };
}

/** The backends the broker has configured, or why they are not known. */
export type ConfiguredBackends =
  | { readonly known: true; readonly names: readonly string[] }
  | { readonly known: false; readonly reason: string };

export interface ThinSummary {
  /** Broker envelopes lacking the wrap of at least one configured backend. */
  readonly objects: number;
  /** Per configured backend, the envelopes without its wrap. */
  readonly missing: ReadonlyMap<string, number>;
}

/** Objects readable through fewer backends than are configured (their seed went out thin). */
export function thinSummary(scan: UsageScan, configured: readonly string[]): ThinSummary {
  let objects = 0;
  const missing = new Map<string, number>();
  for (const set of scan.wrapSets) {
    const present = new Set(set.wraps.map(wrap => wrap.backend));
    const lacking = configured.filter(name => !present.has(name));
    if (lacking.length === 0) continue;
    objects += set.objects;
    for (const name of lacking) missing.set(name, (missing.get(name) ?? 0) + set.objects);
  }
  return { objects, missing };
}

/** Per backend key version, the broker envelopes that carry a wrap under it. */
export function versionUsage(scan: UsageScan): { backend: string; version: string; objects: number }[] {
  const counts = new Map<string, { backend: string; version: string; objects: number }>();
  for (const set of scan.wrapSets)
    for (const wrap of set.wraps) {
      const key = `${wrap.backend}\0${wrap.version}`;
      const entry = counts.get(key) ?? { ...wrap, objects: 0 };
      entry.objects += set.objects;
      counts.set(key, entry);
    }
  return [...counts.values()].sort((a, b) =>
    a.backend === b.backend ? compareVersions(a.version, b.version) : a.backend < b.backend ? -1 : 1,
  );
}

export function reportSections(scan: UsageScan, configured: ConfiguredBackends): Section[] {
  const seconds = (scan.durationMs / 1000).toFixed(1);
  const sections: Section[] = [
    {
      title: 'scan',
      lines: [
        `${scan.objects} values under ${scan.prefix} at etcd revision ${scan.revision}, read from ${scan.scannedAt} in ${seconds} s`,
      ],
    },
    {
      title: 'formats',
      table: {
        headers: ['FORMAT', 'OBJECTS'],
        rows: STORED_FORMATS.map(format => [format, String(scan.formats[format] ?? 0)]),
      },
    },
    {
      title: 'resources',
      table: {
        headers: ['RESOURCE', 'OBJECTS', ...STORED_FORMATS.map(format => format.toUpperCase())],
        rows: scan.resources.map(entry => [
          entry.resource,
          String(entry.objects),
          ...STORED_FORMATS.map(format => String(entry.formats[format] ?? 0)),
        ]),
      },
    },
    {
      title: 'KMS v2 key_ids',
      table: {
        headers: ['KEY_ID', 'OBJECTS'],
        rows: scan.keyIds.map(entry => [entry.keyId, String(entry.objects)]),
      },
    },
    {
      title:
        "backend key versions the broker's envelopes need (an object reads through any one of its wraps)",
      table: {
        headers: ['BACKEND', 'VERSION', 'OBJECTS'],
        rows: versionUsage(scan).map(entry => [entry.backend, entry.version, String(entry.objects)]),
      },
    },
    {
      title: 'wrap sets',
      table: {
        headers: ['WRAPS', 'OBJECTS', 'RESOURCES'],
        rows: scan.wrapSets.map(set => [
          set.wraps.map(wrap => `${wrap.backend}=${wrap.version}`).join(' '),
          String(set.objects),
          counts(set.resources),
        ]),
      },
    },
    { title: 'thin envelopes', lines: thinLines(scan, configured) },
  ];
  if (scan.undecodable.objects > 0)
    sections.push({
      title: 'undecodable',
      lines: [
        `${scan.undecodable.objects} values under the broker's KMS provider did not decode to its envelope (${counts(scan.undecodable.resources)}): damaged, or written by another plugin under its name; no key version of the broker reads them`,
      ],
    });
  return sections;
}

function thinLines(scan: UsageScan, configured: ConfiguredBackends): string[] {
  if (!configured.known) return [`not judged: the configured backends are unknown (${configured.reason})`];
  const thin = thinSummary(scan, configured.names);
  if (thin.objects === 0)
    return [
      `none: every envelope carries a wrap of each configured backend (${configured.names.join(', ')})`,
    ];
  return [
    `${thin.objects} objects lack the wrap of a configured backend (${configured.names.join(', ')}); they read only through the backends that wrapped them until rewritten`,
    ...[...thin.missing.entries()].map(([name, objects]) => `without ${name}: ${objects}`),
  ];
}

function counts(record: Readonly<Record<string, number>>): string {
  return (
    Object.entries(record)
      .map(([name, objects]) => `${name}=${objects}`)
      .join(' ') || '-'
  );
}

/** Numeric versions in numeric order ("9" before "10"), others as text. */
function compareVersions(a: string, b: string): number {
  const [x, y] = [Number(a), Number(b)];
  if (Number.isInteger(x) && Number.isInteger(y)) return x - y;
  return a < b ? -1 : a > b ? 1 : 0;
}
