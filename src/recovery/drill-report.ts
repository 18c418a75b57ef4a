// The drill's report, in the two forms it is read in: a stable JSON document for scripts and
// monitoring, and sections (a title, lines, a table) that the CLI prints. Built from the tally
// and what the sources were, so both forms always say the same.
import type { DrillResult } from './drill.ts';
import { ESCROW_SOURCE, type Sources } from './seed-sources.ts';
import type { KeyList } from './drill-tally.ts';
import { allRecoverable } from './drill-tally.ts';

export interface SourceReport {
  readonly name: string;
  /** Backends: reachable or not; the escrow: its key rebuilt from the shares, or not given. */
  readonly status: 'reachable' | 'unreachable' | 'given' | 'not given';
  readonly reason?: string;
  /** Values this source alone can recover. */
  readonly recovers: number;
  /** Values only this source can recover: what losing it costs. */
  readonly onlyIt: KeyList;
  /** Why its wraps did not unwrap, and how many values each reason concerned. */
  readonly failures: Readonly<Record<string, number>>;
}

export interface DrillReport {
  readonly data: string;
  readonly prefix: string;
  readonly revision: string;
  readonly resumed: boolean;
  readonly durationMs: number;
  readonly backendCalls: number;
  readonly totals: {
    readonly values: number;
    readonly ours: number;
    readonly notOurs: number;
    readonly byKind: Readonly<Record<string, number>>;
    readonly seeds: number;
    readonly escrowWrapped: number;
  };
  readonly sources: readonly SourceReport[];
  /** Values no source could recover: what losing everything else costs. */
  readonly unrecoverable: KeyList;
  readonly decrypt: {
    readonly mode: 'full' | 'sample';
    readonly decrypted: number;
    readonly failed: KeyList;
  };
  readonly allRecoverable: boolean;
}

export function drillReport(
  result: DrillResult,
  sources: Sources,
  data: { data: string; prefix: string; full: boolean },
): DrillReport {
  const { tally } = result;
  const rows: SourceReport[] = [...sources.backends].map(([name, entry]) => ({
    name,
    status: entry.backend === undefined ? 'unreachable' : 'reachable',
    ...(entry.unreachable !== undefined && { reason: entry.unreachable }),
    recovers: tally.recoverable[name] ?? 0,
    onlyIt: tally.onlyBy[name] ?? { count: 0, keys: [] },
    failures: tally.failures[name] ?? {},
  }));
  const escrowBackends = sources.escrowBackends ?? [];
  const configured = escrowBackends.length > 0 ? ` (backend ${escrowBackends.join(', ')})` : '';
  if (sources.escrow !== undefined)
    rows.push({
      name: ESCROW_SOURCE,
      status: 'given',
      reason: `escrow key ${sources.escrow.fingerprint}${configured}`,
      recovers: tally.recoverable[ESCROW_SOURCE] ?? 0,
      onlyIt: tally.onlyBy[ESCROW_SOURCE] ?? { count: 0, keys: [] },
      failures: tally.failures[ESCROW_SOURCE] ?? {},
    });
  else if (tally.escrowWrapped > 0 || escrowBackends.length > 0)
    rows.push({
      name: ESCROW_SOURCE,
      status: 'not given',
      reason: `no shares given${configured}; --escrow-public-key and --share check it`,
      recovers: 0,
      onlyIt: { count: 0, keys: [] },
      failures: {},
    });
  // Wraps of backends that are not configured still count, under their own names.
  for (const name of Object.keys(tally.failures))
    if (!rows.some(row => row.name === name))
      rows.push({
        name,
        status: 'unreachable',
        reason: 'not in the config',
        recovers: 0,
        onlyIt: { count: 0, keys: [] },
        failures: tally.failures[name] ?? {},
      });
  return {
    ...data,
    revision: result.revision,
    resumed: result.resumed,
    durationMs: result.durationMs,
    backendCalls: result.backendCalls,
    totals: {
      values: tally.values,
      ours: tally.ours,
      notOurs: tally.values - tally.ours - (tally.byKind['broker-undecodable'] ?? 0),
      byKind: { ...tally.byKind },
      seeds: tally.seeds,
      escrowWrapped: tally.escrowWrapped,
    },
    sources: rows,
    unrecoverable: tally.unrecoverable,
    decrypt: {
      mode: data.full ? 'full' : 'sample',
      decrypted: tally.decrypt.decrypted,
      failed: tally.decrypt.failed,
    },
    allRecoverable: allRecoverable(tally),
  };
}

export interface Section {
  readonly title: string;
  readonly lines?: readonly string[];
  readonly table?: { readonly headers: readonly string[]; readonly rows: readonly (readonly string[])[] };
}

export function reportSections(report: DrillReport): Section[] {
  const { totals } = report;
  const kinds = Object.entries(totals.byKind)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([kind, count]) => [kind, String(count)]);
  const sections: Section[] = [
    {
      title: 'Drill',
      lines: [
        `${report.data}, prefix ${report.prefix}, revision ${report.revision}${report.resumed ? ' (resumed)' : ''}`,
        `${totals.values} values: ${totals.ours} the broker's (${totals.seeds} distinct seeds, ${totals.escrowWrapped} with an escrow wrap), ${totals.notOurs} not ours`,
        `${report.backendCalls} backend calls, ${(report.durationMs / 1000).toFixed(1)} s`,
      ],
      table: { headers: ['format', 'values'], rows: kinds },
    },
    {
      title: 'Per source (each alone)',
      table: {
        headers: ['source', 'status', 'recovers', 'only it recovers', 'why wraps failed'],
        rows: report.sources.map(row => [
          row.name,
          row.reason === undefined ? row.status : `${row.status} (${row.reason})`,
          `${row.recovers}/${totals.ours}`,
          String(row.onlyIt.count),
          Object.entries(row.failures)
            .map(([reason, count]) => `${count}: ${reason}`)
            .join('; ') || '-',
        ]),
      },
    },
  ];
  for (const row of report.sources)
    if (row.onlyIt.count > 0)
      sections.push({
        title: `Losing ${row.name} would cost these ${row.onlyIt.count} values`,
        lines: listed(row.onlyIt),
      });
  sections.push({
    title: 'Recoverable by no source',
    lines:
      report.unrecoverable.count === 0
        ? ['none: every value of the broker has a source that recovers it']
        : listed(report.unrecoverable),
  });
  const { decrypt } = report;
  sections.push({
    title: `Decrypted (${decrypt.mode === 'full' ? 'every recoverable value' : 'a sample: the first value of every seed, and more up to --sample'})`,
    lines: [
      `${decrypt.decrypted} decrypted to the stored object, ${decrypt.failed.count} failed`,
      ...(decrypt.failed.count > 0 ? listed(decrypt.failed) : []),
    ],
  });
  sections.push({
    title: 'Result',
    lines: [
      report.allRecoverable
        ? 'every value is recoverable (exit 0)'
        : 'some values are NOT recoverable (exit 3)',
    ],
  });
  return sections;
}

function listed(list: KeyList): string[] {
  const more = list.count - list.keys.length;
  return [...list.keys.map(key => `  ${key}`), ...(more > 0 ? [`  … and ${more} more`] : [])];
}
