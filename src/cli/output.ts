// How the read commands print: `-o table|wide|json|yaml` (`--json` stays, as `-o json`), and
// the relative ages (5s, 3m, 2h, 4d) tables show, as kubectl does.
import { Option, type Command } from 'commander';

export const OUTPUT_FORMATS = ['table', 'wide', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export interface FormatOptions {
  /** `--json`, kept for the scripts written before `-o`. */
  readonly json?: boolean;
  readonly output?: OutputFormat;
}

/** Adds `-o/--output` and `--json` (its alias for scripts) to a command. */
export function withOutputOptions(command: Command): Command {
  return command
    .addOption(
      new Option('-o, --output <format>', 'table (default), wide (more columns), json or yaml').choices(
        OUTPUT_FORMATS,
      ),
    )
    .addOption(new Option('--json', 'print JSON for scripts (same as -o json)').conflicts('output'));
}

export function formatOf(options: FormatOptions): OutputFormat {
  return options.json === true ? 'json' : (options.output ?? 'table');
}

/** A response body as a document: JSON as before, YAML through the `yaml` package (loaded only then). */
export async function documentOf(format: 'json' | 'yaml', body: unknown): Promise<string> {
  if (format === 'json') return `${JSON.stringify(body, null, 2)}\n`;
  const { stringify } = await import('yaml');
  return stringify(body);
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const YEAR = 365 * DAY;

/**
 * How long ago `timestamp` was, as kubectl's AGE column says it (its ShortHumanDuration):
 * seconds below a minute, minutes below an hour, hours below a day, days below a year.
 * '-' when there is none; a time slightly ahead (clock skew) reads as 0s.
 */
export function age(timestamp: string | undefined, now: number): string {
  if (timestamp === undefined) return '-';
  const at = Date.parse(timestamp);
  if (Number.isNaN(at)) return '?';
  return duration(now - at);
}

/** A duration in kubectl's short form: 5s, 3m, 2h, 4d, 2y. */
export function duration(ms: number): string {
  if (ms < -SECOND) return '<invalid>';
  if (ms < MINUTE) return `${Math.max(0, Math.floor(ms / SECOND))}s`;
  if (ms < HOUR) return `${Math.floor(ms / MINUTE)}m`;
  if (ms < DAY) return `${Math.floor(ms / HOUR)}h`;
  if (ms < YEAR) return `${Math.floor(ms / DAY)}d`;
  return `${Math.floor(ms / YEAR)}y`;
}
