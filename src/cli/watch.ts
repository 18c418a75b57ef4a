// `--watch` for status, backends and keys: polls the admin API every --interval until Ctrl-C
// (exit 0). On a terminal the view is redrawn in place; into a pipe or a file only what
// changed is printed, as new lines (a row whose content changed, not one whose age ticked).
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidArgumentError } from 'commander';
import { UnreachableError, type AdminTarget } from './admin-client.ts';
import { formatOf, type FormatOptions } from './output.ts';
import { printable, type ReadView } from './read-view.ts';
import { render } from './views.ts';

const MIN_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 3_600_000;
/** Home the cursor and clear the screen: the redraw of `watch(1)` and `kubectl get -w` on a TTY. */
const CLEAR_SCREEN = '\u001b[H\u001b[2J';

export interface WatchOptions extends FormatOptions {
  readonly watch?: boolean;
  /** Milliseconds, parsed by parseInterval. */
  readonly interval?: number;
}

export const DEFAULT_INTERVAL = '2s';

/** `--interval`: 2s, 500ms, 1m, or a plain number of seconds; 100ms to 1h. */
export function parseInterval(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  const unit = { ms: 1, s: 1000, m: 60_000 }[match?.[2] ?? 's'] ?? 1000;
  const ms = match === null ? Number.NaN : Number(match[1]) * unit;
  if (!(ms >= MIN_INTERVAL_MS && ms <= MAX_INTERVAL_MS))
    throw new InvalidArgumentError('give a duration from 100ms to 1h, such as 2s, 500ms or 1m');
  return ms;
}

/** Polls and prints until SIGINT or SIGTERM, which end the command with exit code 0. */
export async function watch<Body>(
  view: ReadView<Body>,
  target: AdminTarget,
  fetch: () => Promise<Body>,
  options: WatchOptions,
): Promise<never> {
  const format = formatOf(options);
  const interval = options.interval ?? parseInterval(DEFAULT_INTERVAL);
  const tty = process.stdout.isTTY === true;
  const stop = () => {
    // A request may be in flight; its answer is no longer wanted. stdout is synchronous on
    // Linux for files, pipes and terminals, so nothing printed is lost.
    if (tty) process.stdout.write('\n');
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let previous: ReadonlySet<string> | undefined;
  let lastProblem: string | undefined;
  for (;;) {
    try {
      const body = await fetch();
      lastProblem = undefined;
      const now = Date.now();
      const listing = view.listing(body, { wide: format === 'wide', now });
      const current = new Set(listing.rows.flatMap(row => (row.stable === undefined ? [] : [row.stable])));
      if (tty) {
        const title = `Every ${interval / 1000}s: kms-broker ${view.name} (${target.address})`;
        process.stdout.write(
          `${CLEAR_SCREEN}${title}  ${new Date(now).toISOString()}\n\n${await printable(view, body, format, now)}`,
        );
      } else if (format === 'json' || format === 'yaml') {
        if (previous === undefined || !sameSet(previous, current))
          process.stdout.write(
            `${previous !== undefined && format === 'yaml' ? '---\n' : ''}${await printable(view, body, format, now)}`,
          );
      } else {
        const lines = render(listing).split('\n');
        const changed =
          previous === undefined
            ? lines.filter(line => line !== '')
            : listing.rows.flatMap((row, index) =>
                row.stable !== undefined && !previous?.has(row.stable) ? [lines[index + 1] ?? ''] : [],
              );
        if (changed.length > 0) process.stdout.write(`${changed.join('\n')}\n`);
      }
      previous = current;
    } catch (error) {
      // A broker restarting is what one watches for: say so once, and keep polling.
      if (!(error instanceof UnreachableError)) throw error;
      if (error.message !== lastProblem)
        process.stderr.write(`kms-broker: ${error.message}; still watching\n`);
      lastProblem = error.message;
    }
    await sleep(interval);
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every(item => b.has(item));
}
