// Turns ajv's errors into one message that names the path an operator must fix, e.g.
// `backends[0].tokenLable: unknown key`. Shared by the config and the state file.
import type { ErrorObject } from 'ajv';

/** Describes the most useful of ajv's errors; `prefix` is the JSON pointer of the validated part. */
export function describeSchemaErrors(errors: readonly ErrorObject[] | null | undefined, prefix = ''): string {
  const first = (errors ?? [])[0];
  if (first === undefined) return `${displayPath(prefix) || '(root)'}: invalid`;
  const path = displayPath(prefix + first.instancePath);
  const where = path === '' ? '(root)' : path;
  const child = (key: string) => `${path === '' ? '' : path + '.'}${key}`;
  switch (first.keyword) {
    case 'additionalProperties':
      return `${child((first.params as { additionalProperty: string }).additionalProperty)}: unknown key`;
    case 'required':
      return `${child((first.params as { missingProperty: string }).missingProperty)}: required key is missing`;
    case 'const': {
      // A choice between literals fails once per literal: list them all, not just the first.
      const allowed = (errors ?? [])
        .filter(error => error.keyword === 'const' && error.instancePath === first.instancePath)
        .map(error => JSON.stringify((error.params as { allowedValue: unknown }).allowedValue));
      return allowed.length === 1
        ? `${where}: must be ${allowed[0]}`
        : `${where}: must be one of ${allowed.join(', ')}`;
    }
    default:
      return `${where}: ${first.message ?? 'invalid'}`;
  }
}

/** `/backends/0/tokenLabel` → `backends[0].tokenLabel`. */
function displayPath(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map(part => part.replaceAll('~1', '/').replaceAll('~0', '~'))
    .reduce(
      (path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path === '' ? part : `${path}.${part}`),
      '',
    );
}
