// `--watch` for status, backends and keys: polls the admin API every --interval until Ctrl-C
// (exit 0). On a terminal the view is redrawn in place; into a pipe or a file only what
// changed is printed, as new lines (a row whose content changed, not one whose age ticked).
import { setTimeout as sleep } from 'node:timers/promises';
import type { AdminTarget } from './admin-client.ts';
import { UnreachableError } from './unreachable.ts';
import { formatOf } from './output.ts';
import { printable, type ReadView } from './read-view.ts';
import { render } from './views.ts';
import { DEFAULT_INTERVAL, parseInterval, type WatchOptions } from './watch-options.ts';

/** Home the cursor and clear the screen: the redraw of `watch(1)` and `kubectl get -w` on a TTY. */
const CLEAR_SCREEN = '\u001b[H\u001b[2J';

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
