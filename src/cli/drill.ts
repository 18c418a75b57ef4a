// `kms-broker drill`: proves an etcd snapshot (or the live etcd) readable, per backend and
// with the escrow: unwraps every stored seed with each of its wraps' sources alone, decrypts a
// sample (or all, --full) as kube-apiserver would, and reports what losing each source would
// cost. Never starts the broker, never writes to etcd or a backend, never prints a seed or a
// plaintext. Exit codes: 0 every value recoverable, 3 some value is not (the report says which),
// 1 bad input (thrown), 2 usage (the caller's `usage`).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { BrokerError } from '../errors.ts';
import { createLogger } from '../log.ts';
import { readState, type DrillSource } from '../recovery/drill-state.ts';
import { runDrill } from '../recovery/drill.ts';
import { drillReport, reportSections } from '../recovery/drill-report.ts';
import { loadEscrow, openSources, SeedUnwrapper, type Escrow } from '../recovery/seed-sources.ts';
import { withSnapshotEtcd } from '../recovery/snapshot-etcd.ts';
import { createEtcdClient, type EtcdClient } from '../usage/etcd-client.ts';
import { progressView } from '../usage/progress.ts';
import { table } from './table.ts';
import { checkedLocation, SCAN_DEFAULTS, type EtcdLocation } from './usage-options.ts';

export interface DrillCliOptions extends EtcdLocation {
  readonly config: string;
  readonly snapshot?: string;
  readonly etcdBinDir?: string;
  readonly escrowPublicKey?: string;
  readonly share?: string[];
  readonly full?: boolean;
  readonly sample: string;
  readonly state?: string;
  readonly json?: boolean;
}

export const EXIT_UNRECOVERABLE = 3;
/** A snapshot is a file on this machine: read it as fast as it goes. */
const SNAPSHOT_RATE = 1_000_000_000;
const MAX_SAMPLE = 1_000_000;

export async function drillCommand(
  options: DrillCliOptions,
  usage: (message: string) => never,
): Promise<number> {
  const sample = Number(options.sample);
  if (!Number.isInteger(sample) || sample < 0 || sample > MAX_SAMPLE)
    usage(`error: --sample: '${options.sample}' must be a whole number from 0 to ${MAX_SAMPLE}`);
  const escrow = await escrowOf(options, usage);
  const location = options.snapshot === undefined ? checkedLocation(options) : undefined;
  const prefix = location?.prefix ?? checkedLocation({ ...options, etcdEndpoints: 'unused' }).prefix;
  const data =
    options.snapshot === undefined
      ? `etcd ${location?.endpoints.join(',')}`
      : `snapshot sha256:${await sha256Of(options.snapshot)}`;
  const source: DrillSource = { data, prefix };
  // A state of other data is refused before any backend is opened or etcd is started.
  const resume = options.state === undefined ? undefined : readState(options.state, source);
  const logger = createLogger('silent');
  const sources = await openSources(options.config, escrow, logger);
  const unwrapper = new SeedUnwrapper(sources);
  const drill = async (client: EtcdClient, rate: number) => {
    const progress = progressView(process.stderr);
    try {
      return await runDrill(client, unwrapper, {
        prefix,
        rate,
        pageSize: Number(SCAN_DEFAULTS.pageSize),
        full: options.full === true,
        sample,
        source,
        statePath: options.state,
        resume,
        onProgress: update => progress.update(update),
      });
    } finally {
      progress.stop();
      client.close();
    }
  };
  try {
    const { snapshot } = options;
    const result =
      snapshot === undefined
        ? // A live etcd serves the apiserver too: read at the usage scan's pace.
          await drill(
            createEtcdClient({ endpoints: location?.endpoints ?? [], tls: location?.tls ?? noTls }),
            Number(SCAN_DEFAULTS.rate),
          )
        : await withSnapshotEtcd(snapshot, options.etcdBinDir, ({ endpoint }) =>
            drill(createEtcdClient({ endpoints: [endpoint], tls: noTls }), SNAPSHOT_RATE),
          );
    const report = drillReport(result, sources, { data, prefix, full: options.full === true });
    process.stdout.write(
      options.json === true ? `${JSON.stringify(report, null, 2)}\n` : render(reportSections(report)),
    );
    return report.allRecoverable ? 0 : EXIT_UNRECOVERABLE;
  } finally {
    unwrapper.clear();
    await sources.close();
    logger.flush();
  }
}

/** The escrow key rebuilt from --share files, when --escrow-public-key names its public key. */
export async function escrowOf(
  options: { readonly escrowPublicKey?: string; readonly share?: string[] },
  usage: (message: string) => never,
): Promise<Escrow | undefined> {
  const shares = options.share ?? [];
  if (options.escrowPublicKey === undefined && shares.length === 0) return undefined;
  if (options.escrowPublicKey === undefined)
    usage('error: --share needs --escrow-public-key <pem>, the key the shares belong to');
  if (shares.length === 0)
    usage('error: --escrow-public-key needs the shares: --share <file> for each, at least the threshold');
  return loadEscrow(options.escrowPublicKey, shares);
}

export function sha256Of(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file)
      .on('data', chunk => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', (error: NodeJS.ErrnoException) =>
        reject(
          new BrokerError(
            'SNAPSHOT_INVALID',
            `--snapshot ${file}: cannot read it (${error.code ?? 'error'})`,
          ),
        ),
      );
  });
}

/** A plain http:// etcd (the restored snapshot) reads no TLS file. */
export const noTls = { caFile: '', certFile: '', keyFile: '' };

function render(sections: ReturnType<typeof reportSections>): string {
  return sections
    .map(section => {
      const body = section.table === undefined ? '' : table(section.table.headers, section.table.rows);
      const lines = (section.lines ?? []).map(line => `${line}\n`).join('');
      return `${section.title}:\n${lines}${body}`;
    })
    .join('\n');
}
