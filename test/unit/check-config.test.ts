// `kms-broker check-config`: every problem of a config at once (schema, cross-references, the
// files it names), "did you mean" for a misspelt key, exit 0 valid / 4 invalid, --json; and it
// never loads a PKCS#11 library, a backend's client or a network module.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminSectionOf, DEFAULT_ADMIN_LISTEN } from '../../src/cli/admin-config.ts';
import { check, type CheckConfigReport } from '../../src/cli/check-config.ts';
import { configSchema } from '../../src/config/schema.ts';
import { runCli } from '../helpers/cli-run.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

let dir: string;
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
};

function validYaml(): string {
  return `
socket: ${dir}/kms.sock
state:
  path: ${dir}/state.json
backends:
  - name: hsm
    type: pkcs11
    module: ${dir}/libpkcs11.so
    tokenLabel: kms
    pinFile: ${dir}/pin
    keyLabel: kek
failover:
  order: [hsm]
`;
}

/** Five mistakes of four kinds: a typo, a wrong type, a dangling name, a missing file. */
function brokenYaml(): string {
  return `
socket: ${dir}/kms.sock
state:
  path: ${dir}/state.json
helth:
  probeIntervalMs: 1000
timeouts:
  callMs: fast
backends:
  - name: hsm
    type: pkcs11
    module: ${dir}/libpkcs11.so
    tokenLabel: kms
    pinFile: ${dir}/missing-pin
    keyLabel: kek
    sesions: 4
failover:
  order: [hsm, vault]
`;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'kmsb-check-config-'));
  file('libpkcs11.so', 'not a real library: check-config must never load it');
  file('pin', '1234\n');
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('check-config', () => {
  it('lists every problem at once, with "did you mean" for misspelt keys', () => {
    const { problems } = check(file('broken.yaml', brokenYaml()));
    assert.equal(problems.length, 5, problems.join('\n'));
    assert.ok(problems.includes('helth: unknown key (did you mean health?)'), problems.join('\n'));
    assert.ok(problems.includes('timeouts.callMs: must be integer'), problems.join('\n'));
    assert.ok(
      problems.includes('backends[0].sesions: unknown key (did you mean sessions?)'),
      problems.join('\n'),
    );
    assert.ok(problems.includes("failover.order[1]: no backend is named 'vault'"), problems.join('\n'));
    assert.ok(
      problems.some(problem => problem.includes('backends[0].pinFile') && problem.includes('missing-pin')),
      problems.join('\n'),
    );
  });

  it('exits 4 listing them on stderr, 0 with a summary when valid, and prints --json', async () => {
    const broken = file('broken.yaml', brokenYaml());
    const invalid = await runCli(['check-config', '--config', broken]);
    assert.equal(invalid.code, 4, invalid.stderr);
    assert.equal(invalid.stdout, '');
    assert.match(invalid.stderr, new RegExp(`^${broken}: 5 problems:\\n( {2}\\S.*\\n){5}$`));

    const json = await runCli(['check-config', '--json'], {
      env: { ...process.env, KMS_BROKER_CONFIG: broken },
    });
    assert.equal(json.code, 4);
    const report = JSON.parse(json.stdout) as CheckConfigReport;
    assert.deepEqual([report.path, report.valid, report.problems.length], [broken, false, 5]);

    const valid = await runCli(['check-config', '--config', file('valid.yaml', validYaml())]);
    assert.equal(valid.code, 0, valid.stderr);
    assert.match(valid.stdout, /: OK: 1 backend: hsm \(pkcs11\); failover hsm \(wrap: first\)\n$/);
  });

  it('names the path it looked for and how to choose another when there is no config', async () => {
    const missing = join(dir, 'nowhere.yaml');
    const run = await runCli(['check-config'], { env: { ...process.env, KMS_BROKER_CONFIG: missing } });
    assert.equal(run.code, 4);
    assert.match(
      run.stderr,
      new RegExp(`no config file at ${missing}; pass --config FILE or set KMS_BROKER_CONFIG=FILE`),
    );
  });

  it('loads no PKCS#11 library, no backend client and no network module', async () => {
    const path = file('valid.yaml', validYaml());
    // A child that records every module it loads, then runs the check as the command does.
    const script = `
      import { registerHooks } from 'node:module';
      const loaded = [];
      registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
      const { check } = await import(${JSON.stringify(join(ROOT, 'src/cli/check-config.ts'))});
      const { problems } = check(${JSON.stringify(path)});
      process.stdout.write(JSON.stringify({ problems, loaded }));`;
    const output = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { timeout: 30_000, maxBuffer: 8 * 1024 * 1024 },
        (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(stderr))),
      ),
    );
    const { problems, loaded } = JSON.parse(output) as { problems: string[]; loaded: string[] };
    assert.deepEqual(problems, []);
    const forbidden =
      /graphene|pkcs11js|@grpc|node-vault|undici|@aws-sdk|@azure|@google-cloud|@alicloud|fastify|^node:(net|http|https|tls|dgram|dns)$/;
    assert.deepEqual(
      loaded.filter(url => forbidden.test(url)),
      [],
    );
    assert.ok(
      loaded.some(url => url.includes('/node_modules/ajv/')),
      'the hook saw the loads',
    );
  });
});

describe("the admin commands' light reading of the config", () => {
  it('takes the admin section with the defaults of the schema', () => {
    const schemaDefault = (configSchema.properties.admin.properties.listen as { default?: string }).default;
    assert.equal(DEFAULT_ADMIN_LISTEN, schemaDefault);
    assert.deepEqual(adminSectionOf({ socket: '/x' }, 'c.yaml'), {
      enabled: true,
      listen: DEFAULT_ADMIN_LISTEN,
      tls: false,
      tokens: [],
    });
    const section = adminSectionOf(
      {
        admin: {
          listen: '10.0.0.1:8787',
          tls: { certFile: '/c', keyFile: '/k' },
          tokens: [{ name: 'ops', role: 'admin', file: '/t' }],
        },
      },
      'c.yaml',
    );
    assert.deepEqual([section.tls, section.tokens[0]?.file], [true, '/t']);
  });

  it('refuses a malformed admin section, naming the key and check-config', () => {
    assert.throws(
      () => adminSectionOf({ admin: { tokens: [{ name: 'ops' }] } }, 'c.yaml'),
      /c\.yaml: admin\.tokens\[0\]: needs name, role and file \(kms-broker check-config lists every problem\)/,
    );
  });
});
