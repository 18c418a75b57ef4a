// The targets of issues 8, 17 and 19, judged from one run's figures: a row per target, met
// or not, with what was measured. Issue 19's rows replace issue 8's where they cover the same
// thing (Status, event-loop delay, peak memory, the Go reference ratios).
import { find, limitOf, ratio, type Report, type StormResult, type Target } from './report.ts';

/** What `--version` and `status` may take from exec to exit, against a running broker. */
const CLI_START_BOUND_MS = 300;
const IDLE_RSS_BOUND_MB = 60;
const PEAK_RSS_BOUND_MB: Record<string, number> = { softhsm: 120, openbao: 150 };
const LOOP_DELAY_BOUND_MS = 20;
const STATUS_VS_TRANSPORT = 1.05;
const STORM_VS_GO = 1.1;
/** Throughput against the Go reference on the same token: at least this share, by concurrency. */
const THROUGHPUT_VS_GO: Record<number, number> = { 1: 1.0, 64: 0.9 };
/** Issue 8's wall-time bounds for the 1,000-seed storm. */
const STORM_BOUND_MS: Record<string, number> = { softhsm: 1000, openbao: 3000 };

const stormsOf = (report: Report, group: string) =>
  report.storms.filter(storm => storm.group === group).toSorted((a, b) => dekCount(a) - dekCount(b));
const dekCount = (storm: StormResult) => storm.deks ?? 1000;
const deksLabel = (storm: StormResult) => dekCount(storm).toLocaleString('en');

export function judge(report: Report): Target[] {
  return [
    ...statusTargets(report),
    ...throughputTargets(report),
    ...stormTargets(report),
    ...memoryTargets(report),
    ...cliTargets(report),
  ];
}

function statusTargets({ cases }: Report): Target[] {
  const targets: Target[] = [];
  for (const concurrency of [1, 64]) {
    const ours = find(cases, 'softhsm', 'status', concurrency);
    const transport = find(cases, 'transport', 'status', concurrency);
    if (ours === undefined || transport === undefined) continue;
    targets.push({
      target: `Status c${concurrency} p50 <= ${STATUS_VS_TRANSPORT} × bare transport`,
      measured: `${ours.p50Ms} ms vs ${transport.p50Ms} ms (${ratio(ours.p50Ms, transport.p50Ms)})`,
      met: ours.p50Ms <= STATUS_VS_TRANSPORT * transport.p50Ms,
    });
  }
  const decrypt = find(cases, 'softhsm', 'decrypt', 1);
  const limit = decrypt && limitOf(cases, decrypt);
  if (decrypt !== undefined && limit !== undefined)
    targets.push({
      target: 'SoftHSM Decrypt c1 p50 <= 1.3 × (transport + HSM op)',
      measured: `${decrypt.p50Ms} ms vs ${limit.p50Ms.toFixed(3)} ms (${ratio(decrypt.p50Ms, limit.p50Ms)})`,
      met: decrypt.p50Ms <= 1.3 * limit.p50Ms,
    });
  return targets;
}

function throughputTargets({ cases }: Report): Target[] {
  const targets: Target[] = [];
  for (const operation of ['decrypt', 'encrypt'])
    for (const [concurrency, share] of Object.entries(THROUGHPUT_VS_GO)) {
      const ours = find(cases, 'softhsm', operation, Number(concurrency));
      const theirs = find(cases, 'go reference', operation, Number(concurrency));
      if (ours === undefined || theirs === undefined) continue;
      targets.push({
        target: `SoftHSM ${operation} c${concurrency} calls/s >= ${share.toFixed(1)} × Go reference`,
        measured: `${ours.perSecond} vs ${theirs.perSecond}/s (${ratio(ours.perSecond, theirs.perSecond)})`,
        met: ours.perSecond >= share * theirs.perSecond,
      });
    }
  return targets;
}

function stormTargets(report: Report): Target[] {
  const targets: Target[] = [];
  const go = stormsOf(report, 'go reference');
  for (const group of ['softhsm', 'openbao'])
    for (const storm of stormsOf(report, group)) {
      const label = `${group} storm of ${deksLabel(storm)}`;
      const bound = STORM_BOUND_MS[group];
      if (dekCount(storm) === 1000 && bound !== undefined)
        targets.push({
          target: `Storm of 1,000 DEKs with ${group} < ${bound / 1000} s`,
          measured: `${storm.wallMs} ms, ${storm.errors} errors`,
          met: storm.wallMs < bound && storm.errors === 0,
        });
      const reference = go.find(other => dekCount(other) === dekCount(storm));
      if (group === 'softhsm' && reference !== undefined)
        targets.push({
          target: `${label}: wall time <= ${STORM_VS_GO} × Go reference`,
          measured: `${storm.wallMs} ms vs ${reference.wallMs} ms (${ratio(storm.wallMs, reference.wallMs)})`,
          met: storm.wallMs <= STORM_VS_GO * reference.wallMs && storm.errors === 0,
        });
      targets.push({
        target: `${label}: event-loop delay p99 < ${LOOP_DELAY_BOUND_MS} ms`,
        measured: `p99 ${storm.eventLoopDelayP99Ms} ms, max ${storm.eventLoopDelayMaxMs} ms`,
        met: (storm.eventLoopDelayP99Ms ?? Infinity) < LOOP_DELAY_BOUND_MS,
      });
      const peakBound = PEAK_RSS_BOUND_MB[group];
      if (peakBound !== undefined)
        targets.push({
          target: `${label}: peak RSS <= ${peakBound} MB`,
          measured: `${storm.rssPeakMb} MB (since ${storm.peakSince}; Go reference ${reference?.rssPeakMb ?? '-'} MB)`,
          met: (storm.rssPeakMb ?? Infinity) <= peakBound,
        });
    }
  return targets;
}

function memoryTargets(report: Report): Target[] {
  const go = report.idle?.find(idle => idle.group === 'go reference');
  return (report.idle ?? [])
    .filter(idle => idle.group === 'softhsm' || idle.group === 'openbao')
    .map(idle => ({
      target: `Idle RSS of the ${idle.group} broker <= ${IDLE_RSS_BOUND_MB} MB`,
      measured: `${idle.rssMb} MB${idle.settled ? '' : ' (not settled)'} (Go reference ${go?.rssMb ?? '-'} MB)`,
      met: idle.rssMb <= IDLE_RSS_BOUND_MB,
    }));
}

function cliTargets(report: Report): Target[] {
  const targets: Target[] = [];
  for (const command of ['--version', 'status']) {
    const cli = report.cliStarts?.find(entry => entry.command === command);
    if (cli === undefined) continue;
    targets.push({
      target: `kms-broker ${command} < ${CLI_START_BOUND_MS} ms (median)`,
      measured: `${cli.medianMs} ms (min ${cli.minMs}, max ${cli.maxMs})`,
      met: cli.medianMs < CLI_START_BOUND_MS,
    });
  }
  return targets;
}
