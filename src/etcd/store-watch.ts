// One watch of a prefix that outlives its stream: on a break it reconnects to the next member
// (200 ms, doubling to 5 s) from the revision after the last event it delivered, so nothing is
// lost or delivered twice; whenever it cannot be sure of that (a reconnect, a compacted start
// revision) it asks the caller to re-read. Every timer is unref'd and cleared on stop.
import * as grpc from '@grpc/grpc-js';
import type { Members } from './members.ts';
import { watchEvents, type WatchClient, type WatchEvent, type WireWatchResponse } from './store-wire.ts';

export interface WatchHandlers {
  /** Events in revision order, batched as etcd sends them. */
  onEvents(events: readonly WatchEvent[], revision: string): void;
  /** The watch could not continue from where it was (compaction, or a reconnect after an error): the caller re-reads the prefix. Called after every reconnect too. */
  onResync(): void;
  /** Connection state changes: true once the watch is established (first time included), false when the stream broke. */
  onConnected(connected: boolean): void;
}

export interface WatchTarget {
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  /** Inclusive; '0': from the newest revision on. */
  readonly startRevision: string;
}

interface WatchDeps {
  readonly members: Members;
  readonly clients: readonly WatchClient[];
  /** How long a member may take to confirm the watch before the next one is tried. */
  readonly createTimeoutMs: number;
}

const FIRST_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 5000;

/** Starts the watch; the returned function stops it for good. */
export function startWatch(deps: WatchDeps, target: WatchTarget, handlers: WatchHandlers): () => void {
  let stopped = false;
  let member = deps.members.order()[0] as number;
  /** The revision the next stream starts at: after the last event delivered. 0n: the newest. */
  let next = BigInt(target.startRevision);
  let backoffMs = FIRST_BACKOFF_MS;
  /** What the caller was last told; undefined before the first stream was established. */
  let reported: boolean | undefined;
  let resyncDue = false;
  let call: grpc.ClientDuplexStream<object, WireWatchResponse> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const report = (connected: boolean) => {
    if (reported === connected) return;
    reported = connected;
    handlers.onConnected(connected);
  };

  const schedule = (delayMs: number) => {
    timer = setTimeout(open, delayMs);
    timer.unref();
  };

  /** The stream failed or ended: next member, after the backoff. */
  const broken = (stream: typeof call) => {
    if (stopped || stream !== call) return;
    call = undefined;
    clearTimeout(timer);
    stream?.cancel();
    resyncDue = true;
    report(false);
    member = (member + 1) % deps.members.size;
    schedule(backoffMs);
    backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
  };

  const answer = (stream: typeof call, response: WireWatchResponse) => {
    if (stopped || stream !== call) return;
    if (response.created === true) {
      clearTimeout(timer);
      backoffMs = FIRST_BACKOFF_MS;
      // Watching from the newest: a later reconnect continues after the revision seen now.
      if (next === 0n) next = BigInt(response.header?.revision ?? '0') + 1n;
      if (resyncDue) {
        resyncDue = false;
        handlers.onResync();
      }
      report(true);
    }
    if (response.canceled === true) {
      const compacted = (response.compact_revision ?? '0') !== '0';
      if (!compacted) return broken(stream);
      // The revisions to continue from are gone: watch from the newest and have the caller
      // re-read (once the new watch is established, so no change falls between the two).
      call = undefined;
      stream?.cancel();
      next = 0n;
      resyncDue = true;
      return open();
    }
    const events = watchEvents(response);
    const last = events.at(-1);
    if (last === undefined) return;
    next = BigInt(last.kv.modRevision) + 1n;
    handlers.onEvents(events, response.header?.revision ?? last.kv.modRevision);
  };

  function open(): void {
    if (stopped) return;
    const metadata = new grpc.Metadata();
    // etcd ends the watch of a member that lost its leader instead of leaving it silent.
    metadata.set('hasleader', 'true');
    const stream = (deps.clients[member] as WatchClient).Watch(metadata, {});
    call = stream;
    stream.on('data', (response: WireWatchResponse) => answer(stream, response));
    stream.on('error', () => broken(stream));
    stream.on('end', () => broken(stream));
    stream.write({
      create_request: { key: target.key, range_end: target.rangeEnd, start_revision: next.toString() },
    });
    // A member that accepts the stream but never confirms the watch is as good as down.
    clearTimeout(timer);
    timer = setTimeout(() => broken(stream), deps.createTimeoutMs);
    timer.unref();
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    call?.cancel();
    call = undefined;
  };
}
