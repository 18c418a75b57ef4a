// docs/errors.md must document exactly the codes of the error catalog, with the catalog's
// gRPC and HTTP mapping, so the operator documentation cannot drift from the code.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { errorCatalog, GrpcCode } from '../../src/errors.ts';

interface DocRow {
  readonly line: number;
  readonly code: string;
  readonly grpcName: string;
  readonly grpcNumber: number;
  readonly http: number;
  readonly meaning: string;
  readonly action: string;
}

const docPath = new URL('../../docs/errors.md', import.meta.url);

/** The rows of the table whose header starts with `| Code |`. */
function parseTable(markdown: string): DocRow[] {
  const lines = markdown.split('\n');
  const header = lines.findIndex(line => /^\|\s*Code\s*\|/.test(line));
  assert.ok(header >= 0, 'docs/errors.md has no table starting with "| Code |"');
  const rows: DocRow[] = [];
  for (let index = header + 2; index < lines.length && lines[index]?.startsWith('|'); index++) {
    const line = lines[index] as string;
    const cells = line
      .split('|')
      .slice(1, -1)
      .map(cell => cell.trim());
    assert.equal(cells.length, 5, `line ${index + 1}: expected 5 cells, got ${cells.length}`);
    const [code, grpc, http, meaning, action] = cells as [string, string, string, string, string];
    const codeMatch = /^`([A-Z_]+)`$/.exec(code);
    const grpcMatch = /^`([A-Z_]+)` \((\d+)\)$/.exec(grpc);
    assert.ok(codeMatch?.[1] !== undefined, `line ${index + 1}: code cell '${code}' is not \`CODE\``);
    assert.ok(
      grpcMatch?.[1] !== undefined && grpcMatch[2] !== undefined,
      `line ${index + 1}: gRPC cell '${grpc}'`,
    );
    assert.match(http, /^\d{3}$/, `line ${index + 1}: HTTP cell`);
    rows.push({
      line: index + 1,
      code: codeMatch[1],
      grpcName: grpcMatch[1],
      grpcNumber: Number(grpcMatch[2]),
      http: Number(http),
      meaning,
      action,
    });
  }
  return rows;
}

describe('docs/errors.md', () => {
  const rows = parseTable(readFileSync(docPath, 'utf8'));
  const documented = rows.map(row => row.code);
  const catalogCodes = Object.keys(errorCatalog);

  it('documents every catalog code', () => {
    const missing = catalogCodes.filter(code => !documented.includes(code));
    assert.deepEqual(missing, [], `codes missing from docs/errors.md: ${missing.join(', ')}`);
  });

  it('documents no code that the catalog lacks, and none twice', () => {
    const unknown = documented.filter(code => !catalogCodes.includes(code));
    assert.deepEqual(unknown, [], `codes in docs/errors.md but not in errorCatalog: ${unknown.join(', ')}`);
    assert.equal(new Set(documented).size, documented.length, 'a code is documented twice');
  });

  it('gives each code the catalog’s gRPC status (name and number) and HTTP status', () => {
    const grpcByName: Record<string, number> = GrpcCode;
    for (const row of rows) {
      const entry = errorCatalog[row.code as keyof typeof errorCatalog];
      assert.equal(
        grpcByName[row.grpcName],
        row.grpcNumber,
        `line ${row.line}: ${row.grpcName} is not ${row.grpcNumber}`,
      );
      assert.equal(row.grpcNumber, entry.grpc, `line ${row.line}: gRPC status of ${row.code}`);
      assert.equal(row.http, entry.http, `line ${row.line}: HTTP status of ${row.code}`);
    }
  });

  it('says for each code what it means and what to do', () => {
    for (const row of rows) {
      assert.ok(row.meaning.length >= 40, `line ${row.line}: ${row.code} has no real explanation`);
      assert.ok(row.action.length >= 20, `line ${row.line}: ${row.code} says nothing about what to do`);
    }
  });
});
