// The flags of --watch (status, backends, keys), apart from the loop itself (watch.ts) so that
// registering them at start loads nothing else.
import { InvalidArgumentError, type Command } from 'commander';
import type { FormatOptions } from './output.ts';

const MIN_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 3_600_000;

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

/** `--watch` and `--interval` of the read commands that can be watched. */
export function withWatchOptions(command: Command): Command {
  return command
    .option('-w, --watch', 'poll and print changes until Ctrl-C (a terminal is redrawn)')
    .option(
      '--interval <duration>',
      `with --watch: time between polls (500ms, 2s, 1m; default ${DEFAULT_INTERVAL})`,
      parseInterval,
    );
}
