// Reads every key under a prefix in pages, all at one revision (the one the first page was
// served at), so the scan is a consistent snapshot however long it takes, and no faster than
// `rate` values a second, so a scan never competes with the apiserver for etcd.
import { setTimeout as delay } from 'node:timers/promises';
import { BrokerError } from '../errors.ts';
import { prefixEnd } from '../etcd/prefix-end.ts';
import { PageTooLarge, type EtcdClient } from './etcd-client.ts';

export { prefixEnd };

export interface PagedReadOptions {
  readonly prefix: Buffer;
  readonly pageSize: number;
  /** Values a second at most. */
  readonly rate: number;
  /** Called with each page, in key order; the next page is read once it has settled. */
  readonly onPage: (
    kvs: readonly { readonly key: Buffer; readonly value: Buffer }[],
    progress: Progress,
  ) => unknown;
  /** Resumes an interrupted read: the keys after this one, at `revision`. */
  readonly resume?: { readonly after: Buffer; readonly revision: string; readonly read: number };
  readonly now?: () => number;
  readonly wait?: (ms: number) => Promise<unknown>;
}

export interface Progress {
  readonly read: number;
  /** Keys under the prefix at the scan's revision. */
  readonly total: number;
  readonly revision: string;
}

export interface PagedReadResult {
  readonly revision: string;
  readonly read: number;
}

/** Returns the revision the scan read at and how many values it read. */
export async function readPrefix(client: EtcdClient, options: PagedReadOptions): Promise<PagedReadResult> {
  const now = options.now ?? (() => performance.now());
  const wait = options.wait ?? delay;
  const rangeEnd = prefixEnd(options.prefix);
  // One page never holds more than a second's worth of values.
  let limit = Math.max(1, Math.min(options.pageSize, Math.floor(options.rate)));
  const started = now();
  let key =
    options.resume === undefined ? options.prefix : Buffer.concat([options.resume.after, Buffer.from([0])]);
  let revision = options.resume?.revision ?? '0';
  let total = 0;
  let read = options.resume?.read ?? 0;
  const resumedAt = read;
  let first = true;
  // Pages are bounded: every page advances past at least one key, and the keys at one
  // revision are finite; the guard only stops a server that answers "more" forever.
  for (let page = 0; ; page++) {
    if (page > 0 && page > total + 1)
      throw new BrokerError(
        'ETCD_READ_FAILED',
        'etcd kept answering that more keys follow; stopped the scan',
      );
    const due = started + ((read - resumedAt) / options.rate) * 1000 - now();
    if (due > 0) await wait(due);
    let response;
    try {
      response = await client.range({ key, rangeEnd, limit, revision });
    } catch (error) {
      // A page over the receive limit (large objects): ask for fewer keys, down to one.
      if (error instanceof PageTooLarge && limit > 1) {
        limit = Math.max(1, Math.floor(limit / 2));
        page--;
        continue;
      }
      if (error instanceof PageTooLarge)
        throw new BrokerError('ETCD_READ_FAILED', 'a single stored value exceeds the 64 MiB a page may hold');
      throw error;
    }
    if (first) {
      // A resumed read counts what it read before, and the keys left at its revision.
      if (revision === '0') revision = response.revision;
      total = resumedAt + response.count;
      first = false;
    }
    read += response.kvs.length;
    await options.onPage(response.kvs, { read, total: Math.max(total, read), revision });
    const last = response.kvs.at(-1);
    if (!response.more || last === undefined) return { revision, read };
    key = Buffer.concat([last.key, Buffer.from([0])]);
  }
}
