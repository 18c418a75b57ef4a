// Secrets (HSM PINs, later tokens) come from a file or an environment variable, never
// from the config itself. Errors name the file or the config key the secret was looked for
// by, never the secret.
import { readFileSync } from 'node:fs';
import { BrokerError } from './errors.ts';

export interface SecretSource {
  readonly file?: string | undefined;
  readonly env?: string | undefined;
  /**
   * The config key that names `env` (pinEnv), named in errors in place of the variable: a
   * secret written there by mistake is a valid variable name often enough to be echoed.
   */
  readonly envKey?: string;
}

export type SecretReader = (source: SecretSource, what: string) => string;

export const readSecret: SecretReader = (source, what) => {
  let value: string | undefined;
  if (source.file !== undefined) {
    try {
      value = readFileSync(source.file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      throw new BrokerError('SECRET_UNREADABLE', `${what}: cannot read ${source.file} (${code})`);
    }
  } else if (source.env !== undefined) {
    value = process.env[source.env];
    if (value === undefined)
      throw new BrokerError(
        'SECRET_UNREADABLE',
        `${what}: the environment variable that ${source.envKey ?? 'the config'} names is not set; set it to the secret, or correct ${source.envKey ?? 'the name'}`,
      );
  }
  // A trailing newline from `echo pin > file` is not part of the PIN.
  const trimmed = value?.replace(/\r?\n$/, '') ?? '';
  if (trimmed === '') throw new BrokerError('SECRET_UNREADABLE', `${what}: the secret is empty`);
  return trimmed;
};
