// One usage scan: every value under the prefix, read in pages at one revision, counted into
// a UsageScan. Never writes to etcd and never decrypts.
import type { UsageScan } from '../broker/usage-scan.ts';
import type { EtcdClient } from './etcd-client.ts';
import { readPrefix, type Progress } from './paged-read.ts';
import { UsageTally } from './tally.ts';

export interface ScanOptions {
  readonly prefix: string;
  readonly pageSize: number;
  readonly rate: number;
  readonly onProgress?: (progress: Progress) => void;
  readonly now?: () => Date;
}

export async function scanUsage(client: EtcdClient, options: ScanOptions): Promise<UsageScan> {
  const now = options.now ?? (() => new Date());
  const tally = new UsageTally(options.prefix);
  const startedAt = now();
  const started = performance.now();
  const { revision } = await readPrefix(client, {
    prefix: Buffer.from(options.prefix, 'utf8'),
    pageSize: options.pageSize,
    rate: options.rate,
    onPage: (kvs, progress) => {
      for (const { key, value } of kvs) tally.add(key.toString('utf8'), value);
      options.onProgress?.(progress);
    },
  });
  return tally.result({
    scannedAt: startedAt.toISOString(),
    revision,
    durationMs: Math.round(performance.now() - started),
  });
}
