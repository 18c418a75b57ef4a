// `kms-broker check-config`: loads the config as `serve` would (YAML, schema, cross-references,
// the files it names) and lists every problem at once, so that one edit fixes them all; it
// opens no backend, no listener and no HSM session (no PKCS#11 module is loaded, nothing goes
// over the network). Exit 0 valid, 4 not; `--json` prints the same as one document.
import { readFileSync } from 'node:fs';
import { checkConfigFiles } from '../config/config-files.ts';
import { configProblems, parseYamlText, tolerantly } from '../config/load.ts';
import type { BrokerConfig } from '../config/schema.ts';
import { BrokerError } from '../errors.ts';
import { chosenConfigPath, missingConfigMessage } from './config-path.ts';

/** Apart from 1 (a failure) and 2 (usage), so a script can tell "fix the file" from the rest. */
export const EXIT_INVALID = 4;

export interface CheckConfigOptions {
  readonly config?: string;
  readonly json?: boolean;
}

/** What `--json` prints: the path checked, and every problem or a summary of what it holds. */
export interface CheckConfigReport {
  readonly path: string;
  readonly valid: boolean;
  readonly problems: readonly string[];
  readonly backends?: readonly { readonly name: string; readonly type: string }[];
  readonly failover?: { readonly order: readonly string[]; readonly wrap: string };
}

export function checkConfigCommand(options: CheckConfigOptions): number {
  const path = chosenConfigPath(options.config);
  const { config, problems } = check(path);
  if (options.json === true) {
    const report: CheckConfigReport =
      problems.length > 0
        ? { path, valid: false, problems }
        : {
            path,
            valid: true,
            problems,
            backends: config.backends.map(({ name, type }) => ({ name, type })),
            failover: { order: config.failover.order, wrap: config.failover.wrap },
          };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return problems.length > 0 ? EXIT_INVALID : 0;
  }
  if (problems.length > 0) {
    const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
    process.stderr.write(`${path}: ${count}:\n${problems.map(problem => `  ${problem}\n`).join('')}`);
    return EXIT_INVALID;
  }
  const backends = config.backends.map(backend => `${backend.name} (${backend.type})`).join(', ');
  process.stdout.write(
    `${path}: OK: ${config.backends.length} backend${config.backends.length === 1 ? '' : 's'}: ${backends}; failover ${config.failover.order.join(',')} (wrap: ${config.failover.wrap})\n`,
  );
  return 0;
}

export function check(path: string): { config: BrokerConfig; problems: string[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    const problem = code === 'ENOENT' ? missingConfigMessage(path) : `cannot read it: ${code}`;
    return { config: {} as BrokerConfig, problems: [problem] };
  }
  const parsed = parseYamlText(text);
  if ('problem' in parsed) return { config: {} as BrokerConfig, problems: [parsed.problem] };
  const { config, problems } = configProblems(parsed.raw, { evenIfMalformed: true });
  // The files are checked on a config with other problems too, as far as its shape allows.
  if (problems.length === 0) problems.push(...fileProblems(config, path));
  else problems.push(...tolerantly(() => fileProblems(config, path)));
  return { config, problems };
}

/** checkConfigFiles throws one error listing every file problem; here they are wanted as a list. */
function fileProblems(config: BrokerConfig, path: string): string[] {
  try {
    checkConfigFiles(config, readFileSync, path);
    return [];
  } catch (error) {
    if (!(error instanceof BrokerError) || error.code !== 'CONFIG_INVALID') throw error;
    const [first = '', ...rest] = error.message.slice(`${path}: `.length).split('\n');
    return rest.length === 0 ? [first] : rest.map(line => line.trim());
  }
}
