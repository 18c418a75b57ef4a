// Summarises a V8 CPU profile (`npm run bench -- --cpu-prof DIR` writes one per process and
// thread) as the functions with the most self time and the most total time, in percent of
// the profile's wall time: the text version of a flame graph, for finding a hot path.
//   node bench/profile-summary.ts FILE.cpuprofile [ROWS]
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const [file, rowsArgument] = process.argv.slice(2);
if (file === undefined) throw new Error('usage: profile-summary.ts FILE.cpuprofile [ROWS]');
const rows = Number(rowsArgument ?? 30);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const nodes = new Map(profile.nodes.map(node => [node.id, node]));
const parents = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
const label = (node: ProfileNode) => {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(src|bench|test)\//, '$1/');
  return `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`;
};

const selfTime = new Map<string, number>();
const totalTime = new Map<string, number>();
let wall = 0;
profile.samples.forEach((id, index) => {
  const micros = profile.timeDeltas[index] ?? 0;
  wall += micros;
  const sampled = nodes.get(id);
  if (sampled === undefined) return;
  selfTime.set(label(sampled), (selfTime.get(label(sampled)) ?? 0) + micros);
  // Each function once per sample, however deep its recursion.
  const seen = new Set<string>();
  for (
    let node: ProfileNode | undefined = sampled;
    node !== undefined;
    node = nodes.get(parents.get(node.id) ?? -1)
  ) {
    const name = label(node);
    if (!seen.has(name)) totalTime.set(name, (totalTime.get(name) ?? 0) + micros);
    seen.add(name);
  }
});

const top = (times: Map<string, number>) =>
  [...times]
    .sort((a, b) => b[1] - a[1])
    .slice(0, rows)
    .map(([name, micros]) => `${((micros / wall) * 100).toFixed(1).padStart(5)} %  ${name}`)
    .join('\n');
process.stdout.write(
  `${file}: ${Math.round(wall / 1000)} ms\n\nself time\n${top(selfTime)}\n\ntotal time\n${top(totalTime)}\n`,
);
