// `kms-broker usage`: scans etcd for which key versions stored data needs, prints the report
// and records it in the broker. Exit codes: 0 scanned and recorded (or --no-record), 1 an error
// before or during the scan (thrown), 3 scanned but not recorded (the report is printed).
import { BrokerError } from '../errors.ts';
import type { UsageScan } from '../broker/usage-scan.ts';
import { createEtcdClient } from '../usage/etcd-client.ts';
import { progressView } from '../usage/progress.ts';
import { reportSections, type ConfiguredBackends } from '../usage/report.ts';
import { scanUsage } from '../usage/scan.ts';
import { request, resolveTarget, type AdminTarget } from './admin-client.ts';
import { documentOf, formatOf } from './output.ts';
import { table } from './table.ts';
import {
  checkedLocation,
  type CheckedLocation,
  type EtcdOptions,
  type UsageOptions,
} from './usage-options.ts';

const EXIT_NOT_RECORDED = 3;
const MAX_RATE = 1_000_000;
const MAX_PAGE_SIZE = 10_000;

export async function usageCommand(options: UsageOptions): Promise<number> {
  const settings = checkedSettings(options);
  // Settings that can only be wrong are refused before a scan that may take minutes.
  const target = await adminTarget(options);
  const scan = await scanEtcd(options, settings);
  const configured = await configuredBackends(target);
  const format = formatOf(options);
  const text =
    format === 'json' || format === 'yaml' ? await documentOf(format, scan) : render(scan, configured);
  process.stdout.write(text);
  if (!options.record) return 0;
  if (target.target === undefined) return notRecorded(target.reason);
  const failure = await record(target.target, scan);
  if (failure !== undefined) return notRecorded(failure);
  process.stderr.write(`recorded the scan of revision ${scan.revision} in the broker\n`);
  return 0;
}

/** Reads etcd with the options' settings, showing progress on stderr. */
export async function scanEtcd(
  options: EtcdOptions,
  settings = checkedSettings(options),
): Promise<UsageScan> {
  const client = createEtcdClient({ endpoints: settings.endpoints, tls: settings.tls });
  const progress = progressView(process.stderr);
  try {
    return await scanUsage(client, { ...settings, onProgress: update => progress.update(update) });
  } finally {
    progress.stop();
    client.close();
  }
}

interface Settings extends CheckedLocation {
  readonly rate: number;
  readonly pageSize: number;
}

function checkedSettings(options: EtcdOptions): Settings {
  const location = checkedLocation(options);
  const rate = Number(options.rate);
  if (!Number.isFinite(rate) || rate <= 0 || rate > MAX_RATE)
    throw invalid(
      `--rate: '${options.rate}' must be a number of values per second, above 0 and at most ${MAX_RATE}`,
    );
  const pageSize = Number(options.pageSize);
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE)
    throw invalid(`--page-size: '${options.pageSize}' must be a whole number from 1 to ${MAX_PAGE_SIZE}`);
  return { ...location, rate, pageSize };
}

/** Where the broker's admin API is, or why it is not known. */
type TargetOrReason =
  | { readonly target: AdminTarget; readonly reason?: undefined }
  | { readonly target?: undefined; readonly reason: string };

async function adminTarget(options: UsageOptions): Promise<TargetOrReason> {
  try {
    return { target: await resolveTarget(options, 'admin') };
  } catch (error) {
    // Recording needs the broker: a missing address or token file is the caller's to fix now.
    if (options.record) {
      if (error instanceof BrokerError && error.code === 'INVALID_REQUEST')
        throw invalid(`${error.message}, or pass --no-record to only print the report`);
      throw error;
    }
    return { reason: error instanceof BrokerError ? error.message : 'no admin API given' };
  }
}

async function configuredBackends(target: TargetOrReason): Promise<ConfiguredBackends> {
  if (target.target === undefined) return { known: false, reason: target.reason };
  try {
    const response = await request(target.target, 'GET', '/v1/backends');
    const body = response.body as { backends?: { name?: unknown }[] };
    if (response.status !== 200 || !Array.isArray(body.backends))
      return { known: false, reason: `the broker answered GET /v1/backends with HTTP ${response.status}` };
    return {
      known: true,
      names: body.backends.flatMap(backend => (typeof backend.name === 'string' ? [backend.name] : [])),
    };
  } catch (error) {
    return { known: false, reason: `the broker is not reachable: ${(error as Error).message}` };
  }
}

/** Posts the scan; returns why it was not recorded, if it was not. */
async function record(target: AdminTarget, scan: UsageScan): Promise<string | undefined> {
  try {
    const response = await request(target, 'POST', '/v1/usage/scans', scan);
    if (response.status === 201) return undefined;
    const problem = response.body as { code?: unknown; detail?: unknown };
    const code = typeof problem.code === 'string' ? problem.code : `HTTP ${response.status}`;
    const detail = typeof problem.detail === 'string' ? `: ${problem.detail}` : '';
    return `the broker refused it (${code}${detail})`;
  } catch (error) {
    return (error as Error).message;
  }
}

function notRecorded(reason: string): number {
  process.stderr.write(
    `kms-broker: the scan was not recorded: ${reason}. Run \`kms-broker usage\` again once the broker is reachable (an admin token records), or pass --no-record to only print the report\n`,
  );
  return EXIT_NOT_RECORDED;
}

function render(scan: UsageScan, configured: ConfiguredBackends): string {
  return reportSections(scan, configured)
    .map(section => {
      const body = section.table === undefined ? '' : table(section.table.headers, section.table.rows);
      const lines = (section.lines ?? []).map(line => `${line}\n`).join('');
      return `${section.title}:\n${lines}${body}`;
    })
    .join('\n');
}

function invalid(message: string): BrokerError {
  return new BrokerError('INVALID_REQUEST', message);
}
