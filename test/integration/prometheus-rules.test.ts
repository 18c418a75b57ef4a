// The alerting rules in deploy/prometheus/: promtool accepts them, its unit tests (each alert
// fires and stays silent as it should) pass, every alert carries what an on-call engineer
// needs (for, severity, summary, description, a runbook that exists), and the PrometheusRule
// holds exactly the rules of the plain file.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { PROMETHEUS_RULE_FILE, RULES_FILE, renderPrometheusRule } from '../../scripts/prometheus-rule.ts';
import { runPromtool } from '../helpers/promtool.ts';

const ROOT = new URL('../../', import.meta.url);
const FOLDER = new URL('deploy/prometheus/', ROOT).pathname;

interface AlertRule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}
interface RuleGroups {
  readonly groups: readonly { readonly name: string; readonly rules: readonly AlertRule[] }[];
}
interface RuleTests {
  readonly rule_files: readonly string[];
  readonly tests: readonly {
    readonly alert_rule_test: readonly {
      readonly alertname: string;
      readonly exp_alerts: readonly unknown[];
    }[];
  }[];
}

const rulesText = readFileSync(RULES_FILE, 'utf8');
const rules = (parse(rulesText) as RuleGroups).groups.flatMap(group => group.rules);

/** GitHub's anchor for a Markdown heading. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchors(doc: string): Set<string> {
  const text = readFileSync(new URL(doc, ROOT), 'utf8');
  return new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map(match => slug(match[1] as string)));
}

describe('deploy/prometheus alerting rules', () => {
  it('pass promtool check rules', () => {
    const run = runPromtool(['check', 'rules', 'kms-broker-rules.yaml'], FOLDER);
    assert.equal(run.status, 0, run.output);
    assert.match(run.output, new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('pass their promtool unit tests, in which every alert both fires and stays silent', t => {
    const tests = parse(readFileSync(`${FOLDER}/kms-broker-rules.test.yaml`, 'utf8')) as RuleTests;
    assert.deepEqual(tests.rule_files, ['kms-broker-rules.yaml']);
    const cases = tests.tests.flatMap(test => test.alert_rule_test);
    for (const { alert } of rules) {
      const mine = cases.filter(test => test.alertname === alert);
      assert.ok(
        mine.some(test => test.exp_alerts.length > 0),
        `${alert} has no case where it fires`,
      );
      assert.ok(
        mine.some(test => test.exp_alerts.length === 0),
        `${alert} has no case where it stays silent`,
      );
    }
    const run = runPromtool(['test', 'rules', 'kms-broker-rules.test.yaml'], FOLDER);
    assert.equal(run.status, 0, run.output);
    assert.match(run.output, /SUCCESS/);
    t.diagnostic(`promtool test rules: ${cases.length} cases in ${run.ms} ms`);
  });

  it('give every alert a for, a severity, a summary, a description and a runbook that exists', () => {
    const known = new Map<string, Set<string>>();
    for (const rule of rules) {
      assert.match(rule.alert, /^KmsBroker[A-Z]\w+$/, rule.alert);
      assert.match(rule.for ?? '', /^\d+[smhd]$/, `${rule.alert}: for`);
      assert.match(rule.labels?.severity ?? '', /^(critical|warning)$/, `${rule.alert}: severity`);
      for (const key of ['summary', 'description'])
        assert.ok((rule.annotations?.[key]?.length ?? 0) > 20, `${rule.alert}: ${key}`);
      const [doc, anchor] = (rule.annotations?.runbook_url ?? '').split('#') as [string, string | undefined];
      assert.match(doc, /^docs\/(operations|failover|deploy)\.md$/, `${rule.alert}: runbook_url`);
      if (!known.has(doc)) known.set(doc, anchors(doc));
      assert.ok(
        anchor !== undefined && known.get(doc)?.has(anchor),
        `${rule.alert}: no heading #${anchor} in ${doc}`,
      );
    }
  });

  it('are the same rules in the PrometheusRule, which is generated from the plain file', async () => {
    const committed = readFileSync(PROMETHEUS_RULE_FILE, 'utf8');
    assert.equal(committed, await renderPrometheusRule(rulesText), 'run node scripts/prometheus-rule.ts');
    const resource = parse(committed) as { apiVersion: string; kind: string; spec: RuleGroups };
    assert.equal(resource.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(resource.kind, 'PrometheusRule');
    assert.deepEqual(resource.spec.groups, (parse(rulesText) as RuleGroups).groups);
  });
});
