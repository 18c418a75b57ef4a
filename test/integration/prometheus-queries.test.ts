// Every query the Grafana dashboard and the alerting rules ship reads metrics a real broker
// serves: a broker process over SoftHSM is started, driven (calls, a rotation) and scraped, and
// each metric name in each expression must be one its /metrics declares. promtool checks that
// the dashboard's expressions parse; the dashboard has the shape Grafana imports.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, stopAllBrokers, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig } from '../helpers/config.ts';
import { until } from '../helpers/fault-injection.ts';
import { exposedNames, labelValuesExpr, metricNames } from '../helpers/promql-names.ts';
import { runPromtool } from '../helpers/promtool.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const ROOT = new URL('../../', import.meta.url);
/** Series Prometheus records itself for every scrape target, not read from the broker. */
const PROMETHEUS_OWN = new Set(['up']);

interface Target {
  readonly refId?: string;
  readonly expr?: string;
  readonly datasource?: { type?: string; uid?: string };
}
interface Panel {
  readonly id?: number;
  readonly type?: string;
  readonly title?: string;
  readonly datasource?: { type?: string; uid?: string };
  readonly gridPos?: { h: number; w: number; x: number; y: number };
  readonly targets?: readonly Target[];
}
interface Dashboard {
  readonly uid?: string;
  readonly title?: string;
  readonly schemaVersion?: number;
  readonly panels?: readonly Panel[];
  readonly templating?: { list?: readonly { name: string; type: string; query?: unknown }[] };
}

const dashboard = JSON.parse(
  readFileSync(new URL('deploy/grafana/kms-broker-dashboard.json', ROOT), 'utf8'),
) as Dashboard;
const rules = (
  parse(readFileSync(new URL('deploy/prometheus/kms-broker-rules.yaml', ROOT), 'utf8')) as {
    groups: { rules: { alert: string; expr: string }[] }[];
  }
).groups.flatMap(group => group.rules);

/** Every PromQL expression shipped: each dashboard target, each variable query, each alert. */
function expressions(): { where: string; expr: string }[] {
  const found: { where: string; expr: string }[] = [];
  for (const panel of dashboard.panels ?? [])
    for (const target of panel.targets ?? [])
      found.push({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr ?? '' });
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type !== 'query') continue;
    const query = (variable.query as { query?: string }).query ?? '';
    found.push({ where: `variable ${variable.name}`, expr: labelValuesExpr(query) ?? query });
  }
  for (const rule of rules) found.push({ where: `alert ${rule.alert}`, expr: rule.expr });
  return found;
}

describe('the dashboard and the alerts', () => {
  let token: SoftHsmToken;
  let broker: BrokerProcess;
  let scrape: string;

  before(async () => {
    token = createToken();
    const config = writeConfig(token);
    broker = await startBrokerProcess(config.path, token.env);
    const admin = adminClient(config.adminSocket);
    // Calls and a rotation, so that the call series and the old version's series exist.
    const kms = createKmsV2Client(config.socket);
    const sealed = await kms.encrypt(randomBytes(32));
    await kms.decrypt({ ciphertext: sealed.ciphertext, key_id: sealed.key_id });
    const rotated = await admin.post('/v1/backends/hsm/rotate', config.adminToken);
    assert.equal(rotated.status, 200, rotated.text);
    kms.close();
    // The first health probe runs beside the calls, not before them: scrape once it has ended
    // (kms_broker_backend_up is absent until then), within the helper's bounded wait.
    const response = await until(
      () => admin.get('/metrics'),
      got => got.status !== 200 || got.text.includes('kms_broker_backend_up{'),
      'the first health probe shows in /metrics',
    );
    assert.equal(response.status, 200);
    scrape = response.text;
  });

  after(async () => {
    await broker.stop();
    await stopAllBrokers();
    token.remove();
  });

  it('read only metric names the broker serves', t => {
    const served = exposedNames(scrape);
    for (const { where, expr } of expressions()) {
      const names = metricNames(expr);
      assert.ok(names.length > 0, `${where}: no metric in ${expr}`);
      for (const name of names)
        assert.ok(served.has(name) || PROMETHEUS_OWN.has(name), `${where}: ${name} is not served (${expr})`);
    }
    t.diagnostic(`/metrics after calls and a rotation: ${Buffer.byteLength(scrape)} bytes`);
  });

  it('serve, after calls and a rotation, the series the dashboard draws for one node', () => {
    for (const series of [
      'kms_broker_build_info{',
      'kms_broker_status_healthy 1',
      'kms_broker_backend_up{backend="hsm"} 1',
      'kms_broker_backend_breaker_state{backend="hsm",state="closed"} 1',
      'kms_broker_kms_request_duration_seconds_bucket{',
      'kms_broker_old_key_version_stage{backend="hsm",version="1",stage="re-seeding"} 1',
      'kms_broker_old_key_version_write_ended_timestamp_seconds{backend="hsm",version="1"}',
      'kms_broker_rotation_stage{stage="re-seeding"} 1',
      'process_cpu_seconds_total ',
      'nodejs_eventloop_lag_p99_seconds ',
    ])
      assert.ok(scrape.includes(series), `${series} in /metrics`);
  });

  it('parse as PromQL: promtool accepts the dashboard queries as recording rules', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kmsb-promql-'));
    try {
      // Grafana's variables, as Grafana would substitute them.
      const concrete = (expr: string) =>
        expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*').replaceAll('$instance', '.*');
      const recordings = expressions().map(({ expr }, index) => ({
        record: `dashboard:query${index}`,
        expr: concrete(expr),
      }));
      writeFileSync(
        join(dir, 'dashboard.yaml'),
        stringify({ groups: [{ name: 'dashboard', rules: recordings }] }),
      );
      const run = runPromtool(['check', 'rules', 'dashboard.yaml'], dir);
      assert.equal(run.status, 0, run.output);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has the shape Grafana imports: uid, title, a data source variable, panels with targets', () => {
    assert.equal(dashboard.uid, 'kms-broker');
    assert.equal(dashboard.title, 'kms-broker');
    assert.ok((dashboard.schemaVersion ?? 0) >= 36);
    assert.ok(
      dashboard.templating?.list?.some(
        variable => variable.type === 'datasource' && variable.query === 'prometheus',
      ),
    );
    const panels = dashboard.panels ?? [];
    const ids = panels.map(panel => panel.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    for (const panel of panels) {
      assert.ok(
        panel.title !== undefined && panel.gridPos !== undefined,
        `panel ${panel.id}: title and gridPos`,
      );
      if (panel.type === 'row') continue;
      assert.deepEqual(panel.datasource, { type: 'prometheus', uid: '${datasource}' }, panel.title);
      assert.ok((panel.targets?.length ?? 0) > 0, `${panel.title}: targets`);
      for (const target of panel.targets ?? []) {
        assert.match(target.refId ?? '', /^[A-Z]$/, `${panel.title}: refId`);
        assert.ok((target.expr ?? '').length > 0, `${panel.title}: expr`);
      }
    }
    // What an operator looks for first: each topic of the dashboard has a panel reading it.
    const read = new Set(expressions().flatMap(({ expr }) => metricNames(expr)));
    for (const name of [
      'kms_broker_status_healthy',
      'kms_broker_backend_breaker_state',
      'kms_broker_kms_request_duration_seconds_bucket',
      'kms_broker_backend_calls_total',
      'kms_broker_thin_seeds',
      'kms_broker_rotation_stage',
      'kms_broker_cluster_converged',
      'process_cpu_seconds_total',
      'nodejs_eventloop_lag_p99_seconds',
    ])
      assert.ok(read.has(name), `the dashboard reads ${name}`);
  });
});
