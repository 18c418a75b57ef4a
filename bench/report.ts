// The table and the targets of issue 8, from one run's figures. Each broker figure is set
// beside its limits: the bare transport alone, the bare transport plus the bare backend
// operation, and (on the same SoftHSM token) the Go reference plugin.
import type { CliStartResult } from './cli-start.ts';
import type { LoadResult } from './load.ts';

export interface CaseResult extends LoadResult {
  readonly group: string;
  readonly operation: string;
  readonly concurrency: number;
}

export interface StormResult extends LoadResult {
  readonly group: string;
  readonly eventLoopDelayP99Ms?: number;
  readonly eventLoopDelayMaxMs?: number;
  readonly rssBeforeMb?: number;
  readonly rssPeakMb?: number;
  readonly rssAfterMb?: number;
  readonly peakSince?: string;
}

export interface Report {
  readonly date: string;
  readonly mode: 'quick' | 'full';
  readonly caseMs: number;
  readonly machine: object;
  readonly wallSeconds: number;
  readonly cases: readonly CaseResult[];
  readonly storms: readonly StormResult[];
  /** CLI start times (issue 17); absent from reports written before. */
  readonly cliStarts?: readonly CliStartResult[];
  readonly notes: readonly string[];
}

/** What `--version` and `status` may take from exec to exit, against a running broker. */
const CLI_START_BOUND_MS = 300;

export interface Target {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | 'report';
}

/** Which bare backend bounds a broker group's operation; wrap: all waits for the slower. */
const backendsOf: Record<string, Record<string, readonly string[]>> = {
  softhsm: { encrypt: ['bare pkcs11'], decrypt: ['bare pkcs11'] },
  openbao: { encrypt: ['bare transit'], decrypt: ['bare transit'] },
  'first:hsm,vault': { encrypt: ['bare pkcs11'], decrypt: ['bare pkcs11'] },
  'all:hsm,vault': { encrypt: ['bare pkcs11', 'bare transit'], decrypt: ['bare pkcs11'] },
  // The escrow wrap is local arithmetic beside the HSM's call: the HSM still bounds it.
  'first:hsm+escrow': { encrypt: ['bare pkcs11'], decrypt: ['bare pkcs11'] },
};
/** The bare backend cases ran at the broker's own bounds: 4 HSM sessions, 32 Transit calls. */
const backendConcurrency: Record<string, number> = { 'bare pkcs11': 4, 'bare transit': 32 };

interface Limit {
  readonly p50Ms: number;
  readonly perSecond: number;
}

function find(cases: readonly CaseResult[], group: string, operation: string, concurrency: number) {
  return cases.find(c => c.group === group && c.operation === operation && c.concurrency === concurrency);
}

/** Transport plus the backend operation(s) behind a broker case; transport alone for Status. */
export function limitOf(cases: readonly CaseResult[], row: CaseResult): Limit | undefined {
  const operation = row.operation.replace(/^v1beta1 /, '');
  const transport = find(cases, 'transport', operation, row.concurrency);
  if (transport === undefined) return undefined;
  if (operation === 'status') return transport;
  const backends = (backendsOf[row.group]?.[operation] ?? []).map(group =>
    find(cases, group, operation, row.concurrency === 1 ? 1 : (backendConcurrency[group] ?? 1)),
  );
  if (backends.length === 0 || backends.some(backend => backend === undefined)) return undefined;
  const bare = backends as CaseResult[];
  return {
    p50Ms: transport.p50Ms + Math.max(...bare.map(backend => backend.p50Ms)),
    perSecond: Math.min(transport.perSecond, ...bare.map(backend => backend.perSecond)),
  };
}

const ratio = (ours: number, theirs: number | undefined) =>
  theirs === undefined || !Number.isFinite(theirs) || theirs === 0 ? '' : `${(ours / theirs).toFixed(2)}×`;

export function printReport(report: Report, targets: readonly Target[]): void {
  const header = [
    'case',
    'op',
    'conc',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'max ms',
    'calls/s',
    'errors',
    'p50 vs limit',
    '/s vs limit',
    'p50 vs Go',
    '/s vs Go',
  ];
  const rows = report.cases.map(row => {
    const limit = limitOf(report.cases, row);
    const reference =
      row.group === 'softhsm'
        ? find(report.cases, 'go reference', row.operation, row.concurrency)
        : undefined;
    return [
      row.group,
      row.operation,
      String(row.concurrency),
      fixed(row.p50Ms),
      fixed(row.p90Ms),
      fixed(row.p99Ms),
      fixed(row.maxMs),
      String(row.perSecond),
      String(row.errors),
      row.group === 'transport' || row.group.startsWith('bare') ? '' : ratio(row.p50Ms, limit?.p50Ms),
      row.group === 'transport' || row.group.startsWith('bare') ? '' : ratio(row.perSecond, limit?.perSecond),
      ratio(row.p50Ms, reference?.p50Ms),
      ratio(row.perSecond, reference?.perSecond),
    ];
  });
  printTable(header, rows);
  process.stdout.write('\nStartup storm: 1,000 distinct DEKs, 32 in flight over 3 connections\n');
  printTable(
    [
      'plugin',
      'wall ms',
      'p50 ms',
      'p99 ms',
      'max ms',
      'errors',
      'loop p99 ms',
      'loop max ms',
      'RSS before/peak/after MB',
    ],
    report.storms.map(storm => [
      storm.group,
      String(storm.wallMs),
      fixed(storm.p50Ms),
      fixed(storm.p99Ms),
      fixed(storm.maxMs),
      String(storm.errors),
      storm.eventLoopDelayP99Ms === undefined ? '' : fixed(storm.eventLoopDelayP99Ms),
      storm.eventLoopDelayMaxMs === undefined ? '' : fixed(storm.eventLoopDelayMaxMs),
      storm.rssPeakMb === undefined ? '' : `${storm.rssBeforeMb}/${storm.rssPeakMb}/${storm.rssAfterMb}`,
    ]),
  );
  const cliStarts = report.cliStarts ?? [];
  if (cliStarts.length > 0) {
    process.stdout.write(
      `\nCLI start: exec to exit, a fresh process each run (${cliStarts[0]?.runs} runs)\n`,
    );
    printTable(
      ['command', '', 'median ms', 'min ms', 'max ms'],
      cliStarts.map(cli => [cli.command, '', fixed(cli.medianMs), fixed(cli.minMs), fixed(cli.maxMs)]),
    );
  }
  process.stdout.write('\nTargets (issues 8 and 17)\n');
  printTable(
    ['target', 'measured', 'met'],
    targets.map(t => [t.target, t.measured, t.met === 'report' ? '-' : t.met ? 'yes' : 'NO']),
  );
  for (const note of report.notes) process.stdout.write(`note: ${note}\n`);
}

export function judge(report: Report): Target[] {
  const { cases, storms } = report;
  const targets: Target[] = [];
  const status = find(cases, 'softhsm', 'status', 1);
  if (status !== undefined)
    targets.push({
      target: 'Status p99 < 1 ms at c1',
      measured: `${status.p99Ms} ms`,
      met: status.p99Ms < 1,
    });
  const decrypt = find(cases, 'softhsm', 'decrypt', 1);
  const limit = decrypt && limitOf(cases, decrypt);
  if (decrypt !== undefined && limit !== undefined) {
    targets.push({
      target: 'SoftHSM Decrypt c1 p50 <= 1.3 × (transport + HSM op)',
      measured: `${decrypt.p50Ms} ms vs ${limit.p50Ms.toFixed(3)} ms (${ratio(decrypt.p50Ms, limit.p50Ms)})`,
      met: decrypt.p50Ms <= 1.3 * limit.p50Ms,
    });
  }
  for (const [group, boundMs] of [
    ['softhsm', 1000],
    ['openbao', 3000],
  ] as const) {
    const storm = storms.find(s => s.group === group);
    if (storm === undefined) continue;
    targets.push({
      target: `Storm of 1,000 DEKs with ${group} < ${boundMs / 1000} s`,
      measured: `${storm.wallMs} ms, ${storm.errors} errors`,
      met: storm.wallMs < boundMs && storm.errors === 0,
    });
    targets.push({
      target: `Event-loop delay p99 < 20 ms (${group} storm)`,
      measured: `p99 ${storm.eventLoopDelayP99Ms} ms, max ${storm.eventLoopDelayMaxMs} ms`,
      met: (storm.eventLoopDelayP99Ms ?? Infinity) < 20,
    });
    targets.push({
      target: `RSS at peak < 150 MB (${group} storm)`,
      measured: `${storm.rssPeakMb} MB (since ${storm.peakSince})`,
      met: (storm.rssPeakMb ?? Infinity) < 150,
    });
  }
  for (const [operation, concurrency] of [
    ['decrypt', 1],
    ['decrypt', 64],
    ['encrypt', 64],
  ] as const) {
    const ours = find(cases, 'softhsm', operation, concurrency);
    const theirs = find(cases, 'go reference', operation, concurrency);
    if (ours === undefined || theirs === undefined) continue;
    targets.push({
      target: `vs Go reference, ${operation} c${concurrency}`,
      measured: `throughput ${ratio(ours.perSecond, theirs.perSecond)}, p50 ${ratio(ours.p50Ms, theirs.p50Ms)}`,
      met: 'report',
    });
  }
  for (const command of ['--version', 'status']) {
    const cli = report.cliStarts?.find(entry => entry.command === command);
    if (cli === undefined) continue;
    targets.push({
      target: `kms-broker ${command} < ${CLI_START_BOUND_MS} ms (median)`,
      measured: `${cli.medianMs} ms (min ${cli.minMs}, max ${cli.maxMs})`,
      met: cli.medianMs < CLI_START_BOUND_MS,
    });
  }
  const ourStorm = storms.find(s => s.group === 'softhsm');
  const goStorm = storms.find(s => s.group === 'go reference');
  if (ourStorm !== undefined && goStorm !== undefined) {
    targets.push({
      target: 'vs Go reference, storm wall time',
      measured: `${ourStorm.wallMs} ms vs ${goStorm.wallMs} ms (${ratio(ourStorm.wallMs, goStorm.wallMs)})`,
      met: 'report',
    });
  }
  return targets;
}

function fixed(ms: number): string {
  return Number.isFinite(ms) ? ms.toFixed(ms < 10 ? 3 : 1) : '-';
}

function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map(row => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) =>
        column < 2 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join('  ');
  process.stdout.write([line(header), ...rows.map(line)].map(text => text.trimEnd()).join('\n') + '\n');
}
