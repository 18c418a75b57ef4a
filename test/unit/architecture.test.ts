// The layout rules of src/, checked on every run rather than remembered: folders follow the
// flow without import cycles, the shared root modules depend on no folder, backends never
// reach into the broker, and the adapters see the broker only through its ports.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';

const src = resolve(import.meta.dirname, '../../src');

interface Import {
  readonly from: string;
  readonly to: string;
}

/** Every import (static, type-only or dynamic) between files of src/, as paths relative to src/. */
function imports(): Import[] {
  const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter(file => file.endsWith('.ts'));
  return files.flatMap(file => {
    const text = readFileSync(join(src, file), 'utf8');
    return ts
      .preProcessFile(text, true, true)
      .importedFiles.filter(({ fileName }) => fileName.startsWith('.'))
      .map(({ fileName }) => ({
        from: file.split(sep).join('/'),
        to: relative(src, resolve(src, dirname(file), fileName))
          .split(sep)
          .join('/'),
      }));
  });
}

/** The folder a file belongs to at `depth` below `within` ('' for src/ itself), or undefined outside it. */
function folderOf(file: string, within: string): string | undefined {
  const prefix = within === '' ? '' : `${within}/`;
  if (!file.startsWith(prefix)) return undefined;
  const rest = file.slice(prefix.length).split('/');
  return rest.length > 1 ? rest[0] : undefined;
}

/** A cycle in the graph, as the nodes along it, or undefined. */
function findCycle(edges: ReadonlyMap<string, ReadonlySet<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined;
    if (state.get(node) === 'open') return [...path.slice(path.indexOf(node)), node];
    state.set(node, 'open');
    path.push(node);
    for (const next of edges.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle !== undefined) return cycle;
    }
    path.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of edges.keys()) {
    const cycle = visit(node);
    if (cycle !== undefined) return cycle;
  }
  return undefined;
}

/** The folders directly below `within` and which of them import which. */
function folderGraph(all: readonly Import[], within: string): Map<string, Set<string>> {
  const edges = new Map<string, Set<string>>();
  for (const { from, to } of all) {
    const [a, b] = [folderOf(from, within), folderOf(to, within)];
    if (a === undefined || b === undefined || a === b) continue;
    edges.set(a, (edges.get(a) ?? new Set()).add(b));
  }
  return edges;
}

const all = imports();
const folders = [
  '',
  ...readdirSync(src, { recursive: true, withFileTypes: true })
    .filter(entry => entry.isDirectory())
    .map(entry => relative(src, join(entry.parentPath, entry.name)).split(sep).join('/')),
];

describe('architecture of src/', () => {
  it('finds a cycle where there is one', () => {
    const edges = new Map([
      ['grpc', new Set(['broker'])],
      ['broker', new Set(['backends'])],
      ['backends', new Set(['broker'])],
    ]);
    assert.deepEqual(findCycle(edges), ['broker', 'backends', 'broker']);
    assert.equal(findCycle(new Map([['grpc', new Set(['broker'])]])), undefined);
  });

  it('reads the imports it checks', () => {
    assert.ok(all.some(({ from, to }) => from === 'app.ts' && to === 'broker/broker.ts'));
    assert.ok(all.some(({ from }) => from.startsWith('backends/pkcs11/')));
  });

  for (const folder of folders) {
    it(`has no import cycle between the folders of ${folder === '' ? 'src' : `src/${folder}`}`, () => {
      const cycle = findCycle(folderGraph(all, folder));
      assert.equal(cycle, undefined, `cycle: ${cycle?.join(' → ')}`);
    });
  }

  it('keeps the shared root modules free of any folder (app.ts, the composition root, aside)', () => {
    const offending = all.filter(
      ({ from, to }) => !from.includes('/') && from !== 'app.ts' && to.includes('/'),
    );
    assert.deepEqual(offending, []);
  });

  it('lets backends depend on neither the broker nor the config loader', () => {
    const offending = all.filter(
      ({ from, to }) =>
        from.startsWith('backends/') && (to.startsWith('broker/') || to.startsWith('config/')),
    );
    assert.deepEqual(offending, []);
  });

  it('lets the adapters see the broker only through its ports', () => {
    const offending = all.filter(
      ({ from, to }) =>
        (from.startsWith('grpc/') || from.startsWith('admin/')) &&
        to.startsWith('broker/') &&
        to !== 'broker/ports.ts',
    );
    assert.deepEqual(offending, []);
  });
});
