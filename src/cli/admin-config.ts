// The part of the broker's config the admin API commands need: where the admin API listens,
// over TLS or not, and its token files. Read from the YAML alone, without the config schema:
// loading the schema and its validator (some 260 modules) would triple the start time of
// `kms-broker status`, and the broker that serves this config has already validated it.
// A malformed `admin` section is still an error naming the key, and points at check-config.
import { readFileSync } from 'node:fs';
import { BrokerError } from '../errors.ts';

/** The schema's default for admin.listen (src/config/schema.ts); a test keeps the two equal. */
export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:8787';

export interface AdminSection {
  readonly enabled: boolean;
  readonly listen: string;
  readonly tls: boolean;
  readonly tokens: readonly { readonly name: string; readonly role: string; readonly file: string }[];
}

export async function readAdminSection(path: string): Promise<AdminSection> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new BrokerError(
      'CONFIG_INVALID',
      `cannot read config file ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  const { parse } = await import('yaml');
  let raw: unknown;
  try {
    raw = parse(text, { maxAliasCount: 100 });
  } catch (error) {
    throw invalid(path, `not valid YAML: ${(error as Error).message.split('\n')[0]}`);
  }
  return adminSectionOf(raw, path);
}

/** The admin section of a parsed config, with the schema's defaults. */
export function adminSectionOf(raw: unknown, path: string): AdminSection {
  const admin = isRecord(raw) ? (raw['admin'] ?? {}) : {};
  if (!isRecord(admin)) throw invalid(path, 'admin: must be a mapping');
  const { enabled = true, listen = DEFAULT_ADMIN_LISTEN, tls, tokens = [] } = admin;
  if (typeof enabled !== 'boolean') throw invalid(path, 'admin.enabled: must be true or false');
  if (typeof listen !== 'string' || listen === '')
    throw invalid(path, 'admin.listen: must be HOST:PORT or unix:///path');
  if (!Array.isArray(tokens)) throw invalid(path, 'admin.tokens: must be a list');
  const checked = tokens.map((token: unknown, index) => {
    const { name, role, file } = isRecord(token) ? token : {};
    if (typeof name !== 'string' || typeof role !== 'string' || typeof file !== 'string')
      throw invalid(path, `admin.tokens[${index}]: needs name, role and file`);
    return { name, role, file };
  });
  return { enabled, listen, tls: tls !== undefined && tls !== null, tokens: checked };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(path: string, detail: string): BrokerError {
  return new BrokerError(
    'CONFIG_INVALID',
    `${path}: ${detail} (kms-broker check-config lists every problem)`,
  );
}
