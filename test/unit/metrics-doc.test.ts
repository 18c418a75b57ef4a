// docs/metrics.md lists every metric the broker serves, with its type and labels, and nothing
// it does not serve: the table operators write queries from stays true.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Metrics } from '../../src/metrics/metrics.ts';

interface DocumentedMetric {
  readonly type: string;
  readonly labels: string;
}

/** The rows of the tables under "## Every metric", by metric name (`_x_y` cells abbreviate). */
function documented(): Map<string, DocumentedMetric> {
  const text = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
  const section = text.slice(text.indexOf('## Every metric'), text.indexOf('### Renamed metrics'));
  const rows = new Map<string, DocumentedMetric>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map(cell => cell.trim());
    if (cells.length < 5 || !(cells[1] ?? '').startsWith('`')) continue;
    const names = [...(cells[1] ?? '').matchAll(/`([a-z0-9_]+)`/g)].map(match => match[1] as string);
    const first = names[0] as string;
    for (const name of names) {
      const full = name.startsWith('_')
        ? first
            .split('_')
            .slice(0, -(name.split('_').length - 1))
            .join('_') + name
        : name;
      rows.set(full, { type: cells[2] ?? '', labels: cells[3] ?? '' });
    }
  }
  return rows;
}

/** A broker's metrics with every source set and every call kind recorded once, so each series shows. */
async function served(): Promise<Map<string, { type: string; labels: Set<string>; samples: number }>> {
  const metrics = new Metrics({ defaultMetrics: true });
  metrics.kmsRequest('v2.Encrypt', 'ok', 0.001);
  metrics.backendCall('hsm', 'wrap', 'ok', 0.001);
  metrics.breakerState('hsm', 'closed');
  metrics.probed('hsm', true, Date.now());
  metrics.keySetFrom(() => ({ keyId: 'kbr1-a', writeVersions: [{ backend: 'hsm', version: '2' }] }));
  metrics.statusFrom(() => ({ keyId: 'kbr1-a', healthz: 'ok', underReplicatedKeyIds: [] }));
  metrics.clusterFrom(() => ({ members: [1], converged: true, etcd: { reachable: true } }));
  metrics.rotationFrom(() => ({
    stage: 'needed',
    lastScan: { scannedAt: new Date().toISOString() },
    versions: [{ backend: 'hsm', version: '1', stage: 'needed', writeEndedAt: new Date().toISOString() }],
  }));
  const found = new Map<string, { type: string; labels: Set<string>; samples: number }>();
  for (const metric of await metrics.registry.getMetricsAsJSON()) {
    const labels = new Set<string>();
    for (const sample of metric.values) for (const label of Object.keys(sample.labels)) labels.add(label);
    labels.delete('le'); // a histogram's buckets
    found.set(metric.name, { type: String(metric.type), labels, samples: metric.values.length });
  }
  return found;
}

describe('docs/metrics.md', () => {
  it('lists every metric the broker serves, with its type and labels, and no other', async () => {
    const docs = documented();
    const metrics = await served();
    assert.deepEqual([...docs.keys()].sort(), [...metrics.keys()].sort());
    for (const [name, { type, labels, samples }] of metrics) {
      const row = docs.get(name);
      assert.equal(row?.type, type, `${name}: documented as ${row?.type}, served as ${type}`);
      // (nodejs_active_requests has no series while no request is active)
      if (labels.size === 0 && samples > 0) assert.equal(row.labels, 'none', `${name} has no labels`);
      for (const label of labels)
        assert.ok(row.labels.includes(`\`${label}\``), `${name}: label ${label} undocumented`);
    }
  });
});
