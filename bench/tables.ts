// The run as text tables: the cases beside their limits and the Go reference, the startup
// storms, memory at idle and at the storms' peaks, the CLI's start, and the targets.
import {
  find,
  fixed,
  limitOf,
  ratio,
  REFERENCE_OF,
  type Report,
  type StormResult,
  type Target,
} from './report.ts';

const orBlank = (value: number | undefined, format = (n: number) => String(n)) =>
  value === undefined ? '' : format(value);

/** Under ten clock ticks (100 ms) of CPU the figure is coarse: marked with a tilde. */
const COARSE_CPU_MS = 100;
const cpuCell = (row: { readonly cpuMs?: number; readonly cpuMsPer1000Calls?: number }) =>
  row.cpuMsPer1000Calls === undefined
    ? ''
    : `${(row.cpuMs ?? Infinity) < COARSE_CPU_MS ? '~' : ''}${row.cpuMsPer1000Calls.toFixed(1)}`;

export function printReport(report: Report, targets: readonly Target[]): void {
  const { machine } = report;
  process.stdout.write(
    `${report.mode} run on ${machine.cpus} × ${machine.model}, ${machine.memoryMb} MB, Linux ${machine.kernel}, ` +
      `Node.js ${machine.node}; load average ${machine.loadAverageStart.join(' ')} at start, ` +
      `${machine.loadAverageEnd.join(' ')} at end\n\n`,
  );
  printCases(report);
  printStorms(report.storms);
  printMemory(report);
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
  process.stdout.write('\nTargets (issues 8, 17 and 19)\n');
  printTable(
    ['target', 'measured', 'met'],
    targets.map(t => [t.target, t.measured, t.met === 'report' ? '-' : t.met ? 'yes' : 'NO']),
  );
  for (const note of report.notes) process.stdout.write(`note: ${note}\n`);
}

function printCases(report: Report): void {
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
    'CPU ms/1k',
    'p50 vs limit',
    '/s vs limit',
    'p50 vs Go',
    '/s vs Go',
    'CPU vs Go',
  ];
  const rows = report.cases.map(row => {
    const limit = limitOf(report.cases, row);
    const referenceGroup = REFERENCE_OF[row.group];
    const reference =
      referenceGroup === undefined
        ? undefined
        : find(report.cases, referenceGroup, row.operation, row.concurrency);
    const bare = row.group === 'transport' || row.group.startsWith('bare');
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
      cpuCell(row),
      bare ? '' : ratio(row.p50Ms, limit?.p50Ms),
      bare ? '' : ratio(row.perSecond, limit?.perSecond),
      ratio(row.p50Ms, reference?.p50Ms),
      ratio(row.perSecond, reference?.perSecond),
      row.cpuMsPer1000Calls === undefined ? '' : ratio(row.cpuMsPer1000Calls, reference?.cpuMsPer1000Calls),
    ];
  });
  printTable(header, rows);
}

function printStorms(storms: readonly StormResult[]): void {
  process.stdout.write('\nStartup storms: distinct DEKs decrypted, 32 in flight over 3 connections\n');
  printTable(
    [
      'plugin',
      'DEKs',
      'wall ms',
      'p50 ms',
      'p99 ms',
      'max ms',
      'errors',
      'loop p99 ms',
      'loop max ms',
      'RSS before/peak/after MB',
      'heap used/total at end MB',
      'CPU ms/1k',
    ],
    storms.map(storm => [
      storm.group,
      String(storm.deks ?? 1000),
      String(storm.wallMs),
      fixed(storm.p50Ms),
      fixed(storm.p99Ms),
      fixed(storm.maxMs),
      String(storm.errors),
      orBlank(storm.eventLoopDelayP99Ms, fixed),
      orBlank(storm.eventLoopDelayMaxMs, fixed),
      storm.rssPeakMb === undefined ? '' : `${storm.rssBeforeMb}/${storm.rssPeakMb}/${storm.rssAfterMb}`,
      storm.heapAtEnd === undefined ? '' : `${storm.heapAtEnd.heapUsedMb}/${storm.heapAtEnd.heapTotalMb}`,
      cpuCell(storm),
    ]),
  );
}

/** Idle and storm-peak memory side by side, one row per plugin, measured the same way for all. */
function printMemory(report: Report): void {
  const idle = report.idle ?? [];
  if (idle.length === 0) return;
  const sizes = [...new Set(report.storms.map(storm => storm.deks ?? 1000))].toSorted((a, b) => a - b);
  const peak = (group: string, deks: number) =>
    report.storms.find(storm => storm.group === group && (storm.deks ?? 1000) === deks)?.rssPeakMb;
  process.stdout.write(
    '\nMemory: VmRSS idle (settled: two reads 0.5 s apart within 1 MB), VmHWM in each storm\n',
  );
  printTable(
    [
      'plugin',
      '',
      'idle RSS MB',
      'idle heap used/total MB',
      ...sizes.map(deks => `peak ${deks.toLocaleString('en')}-DEK storm MB`),
    ],
    idle.map(entry => [
      entry.group,
      '',
      `${entry.rssMb}${entry.settled ? '' : ' (not settled)'}`,
      entry.heap === undefined ? '' : `${entry.heap.heapUsedMb}/${entry.heap.heapTotalMb}`,
      ...sizes.map(deks => orBlank(peak(entry.group, deks))),
    ]),
  );
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
