// Writes deploy/prometheus/kms-broker-prometheusrule.yaml from kms-broker-rules.yaml: the same
// rule groups wrapped as a Prometheus Operator PrometheusRule, so the two never drift
// (test/integration/prometheus-rules.test.ts fails when the committed file differs).
//   node scripts/prometheus-rule.ts            rewrite the PrometheusRule
//   node scripts/prometheus-rule.ts --check    exit 1 when it is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import { format, resolveConfig } from 'prettier';
import { parse, stringify } from 'yaml';

const folder = new URL('../deploy/prometheus/', import.meta.url);
export const RULES_FILE = new URL('kms-broker-rules.yaml', folder);
export const PROMETHEUS_RULE_FILE = new URL('kms-broker-prometheusrule.yaml', folder);

const HEADER = `# Generated from kms-broker-rules.yaml by \`node scripts/prometheus-rule.ts\`: edit that file, not
# this one. The same alerting rules as a Prometheus Operator PrometheusRule; its labels must
# match your Prometheus' ruleSelector (kube-prometheus-stack selects release: <its release name>).
`;

/** The PrometheusRule text for a plain rules file's text, formatted as `prettier --check` wants. */
export async function renderPrometheusRule(rulesText: string): Promise<string> {
  const rules = parse(rulesText) as { groups: unknown[] };
  const resource = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'kms-broker',
      labels: { 'app.kubernetes.io/name': 'kms-broker', 'app.kubernetes.io/component': 'alerting' },
    },
    spec: { groups: rules.groups },
  };
  const options = await resolveConfig(PROMETHEUS_RULE_FILE);
  return format(HEADER + stringify(resource, { lineWidth: 0 }), { ...options, parser: 'yaml' });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const want = await renderPrometheusRule(readFileSync(RULES_FILE, 'utf8'));
  if (process.argv.includes('--check')) {
    if (readFileSync(PROMETHEUS_RULE_FILE, 'utf8') !== want) {
      console.error(
        'deploy/prometheus/kms-broker-prometheusrule.yaml is out of date: run node scripts/prometheus-rule.ts',
      );
      process.exit(1);
    }
  } else writeFileSync(PROMETHEUS_RULE_FILE, want);
}
