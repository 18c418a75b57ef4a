// Turns ajv's errors into messages that name the path an operator must fix, e.g.
// `backends[0].tokenLable: unknown key`: every problem, so that one edit fixes them all.
// Shared by the config and the state file. No message quotes a value: a PIN or token put
// where a file or variable name belongs must not reach the logs.
import type { ErrorObject } from 'ajv';

/** Every problem ajv found, one message each; `prefix` is the JSON pointer of the validated part. */
export function schemaProblems(errors: readonly ErrorObject[] | null | undefined, prefix = ''): string[] {
  const all = errors ?? [];
  if (all.length === 0) return [`${displayPath(prefix) || '(root)'}: invalid`];
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const error of all) {
    // A union's own error repeats what its branches said.
    if (
      error.keyword === 'anyOf' &&
      all.some(other => other !== error && other.instancePath === error.instancePath)
    )
      continue;
    const grouped = `${error.keyword === 'const' ? 'const' : keyedKeyword(error) ? 'keys' : error.schemaPath}@${error.instancePath}`;
    if (seen.has(grouped)) continue;
    seen.add(grouped);
    problems.push(describe(error, all, displayPath(prefix + error.instancePath)));
  }
  return problems;
}

/** The first of the problems: where one message is enough (the state file). */
export function describeSchemaErrors(errors: readonly ErrorObject[] | null | undefined, prefix = ''): string {
  return schemaProblems(errors, prefix)[0] ?? '(root): invalid';
}

function keyedKeyword(error: ErrorObject): boolean {
  return error.keyword === 'additionalProperties' || error.keyword === 'required';
}

function describe(first: ErrorObject, all: readonly ErrorObject[], path: string): string {
  const where = path === '' ? '(root)' : path;
  const sameObject = all.filter(error => error.instancePath === first.instancePath);
  switch (first.keyword) {
    case 'additionalProperties':
    case 'required':
      return describeKeys(sameObject, path);
    case 'const': {
      // A choice between literals fails once per literal: list them all, not just the first.
      const allowed = sameObject
        .filter(error => error.keyword === 'const')
        .map(error => JSON.stringify((error.params as { allowedValue: unknown }).allowedValue));
      return allowed.length === 1
        ? `${where}: must be ${allowed[0]}`
        : `${where}: must be one of ${allowed.join(', ')}`;
    }
    case 'pattern':
      return `${where}: ${patternMeaning((first.params as { pattern: string }).pattern) ?? first.message ?? 'invalid'}`;
    default:
      return `${where}: ${first.message ?? 'invalid'}`;
  }
}

/**
 * Unknown and missing keys of one object, together: a misspelt required key is both, and
 * "required key is missing" alone hides the typo that caused it. An unknown key close to a
 * key the schema knows is offered as the likely fix.
 */
function describeKeys(errors: readonly ErrorObject[], path: string): string {
  const unknown = errors
    .filter(error => error.keyword === 'additionalProperties')
    .map(error => (error.params as { additionalProperty: string }).additionalProperty);
  const missing = errors
    .filter(error => error.keyword === 'required')
    .map(error => (error.params as { missingProperty: string }).missingProperty);
  const known = Object.keys(
    (errors[0]?.parentSchema as { properties?: object } | undefined)?.properties ?? {},
  );
  const meant = (key: string) => {
    const candidate = known.find(other => similar(key, other));
    return candidate === undefined || missing.includes(candidate) ? '' : ` (did you mean ${candidate}?)`;
  };
  const child = (key: string) => `${path === '' ? '' : path + '.'}${key}`;
  if (missing.length === 0) return unknown.map(key => `${child(key)}: unknown key${meant(key)}`).join('; ');
  if (unknown.length === 0) return missing.map(key => `${child(key)}: required key is missing`).join('; ');
  const parts = [
    ...unknown.map(key => `unknown key '${key}'${meant(key)}`),
    ...missing.map(key => {
      const typo = unknown.some(candidate => similar(candidate, key));
      return `required key '${key}' is missing${typo ? ' (did you mean it?)' : ''}`;
    }),
  ];
  return `${path === '' ? '(root)' : path}: ${parts.join('; ')}`;
}

/** What the shared patterns mean, in words (ajv would print the regular expression). */
function patternMeaning(pattern: string): string | undefined {
  if (pattern === '^/') return 'must be an absolute path (starting with /)';
  if (pattern === '^[A-Za-z_][A-Za-z0-9_]*$')
    // Only secrets come from the environment: a value that is no variable name may be one.
    return 'must be the name of an environment variable (letters, digits and _, not starting with a digit) that holds the secret, never the secret itself';
  return undefined;
}

/** Whether `typed` is plausibly a misspelling of `meant`: case aside, a few edits. */
function similar(typed: string, meant: string): boolean {
  const a = typed.toLowerCase();
  const b = meant.toLowerCase();
  if (Math.abs(a.length - b.length) > 2) return false;
  // Levenshtein distance, one row at a time.
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min((previous[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost));
    }
    previous = row;
  }
  // Two edits in a long name, fewer in a short one: 'foo' is no misspelling of 'log'.
  return (previous[b.length] ?? Infinity) <= Math.min(2, Math.floor(b.length / 3));
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
