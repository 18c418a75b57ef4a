// `kms-broker encryption-config` as an operator runs it: the YAML it prints is exactly the
// EncryptionConfiguration kube-apiserver needs for the broker's socket and call budget, and
// every bad option ends with one clear message and the usage exit status, never half a file.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';

function encryptionConfig(args: readonly string[]): Promise<CliRun> {
  return runCli(['encryption-config', ...args]);
}

/** A broker config that is never served: the command only reads it. */
function brokerConfig(overrides: Record<string, unknown> = {}): TestConfig {
  return writeConfig(undefined, {
    backends: [
      {
        name: 'hsm',
        type: 'pkcs11',
        module: '/usr/lib/softhsm/libsofthsm2.so',
        tokenLabel: 'kms',
        pinFile: '/etc/kms-broker/hsm-pin',
        keyLabel: 'kek',
      },
    ],
    failover: { order: ['hsm'] },
    ...overrides,
  });
}

async function printed(args: readonly string[]): Promise<unknown> {
  const run = await encryptionConfig(args);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr, '');
  return parse(run.stdout);
}

describe('kms-broker encryption-config', () => {
  const configs: TestConfig[] = [];
  let defaults: TestConfig;
  let slowBudget: TestConfig;
  let v1Disabled: TestConfig;

  before(() => {
    defaults = brokerConfig();
    slowBudget = brokerConfig({ timeouts: { callMs: 4200 } });
    v1Disabled = brokerConfig({ kmsV1: { enabled: false } });
    configs.push(defaults, slowBudget, v1Disabled);
  });
  after(() => {
    for (const config of configs) rmSync(config.dir, { recursive: true, force: true });
  });

  it('prints a KMS v2 provider for secrets on the configured socket, with the default name and a 3 s timeout', async () => {
    const run = await encryptionConfig(['--config', defaults.path]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(parse(run.stdout), {
      apiVersion: 'apiserver.config.k8s.io/v1',
      kind: 'EncryptionConfiguration',
      resources: [
        {
          resources: ['secrets'],
          providers: [
            {
              kms: {
                apiVersion: 'v2',
                name: 'kms-broker',
                endpoint: `unix://${defaults.socket}`,
                timeout: '3s',
              },
            },
          ],
        },
      ],
    });
    // The file says why the name must stay: operators edit these by hand later.
    assert.match(run.stdout, /^# .*'k8s:enc:kms:v2:kms-broker:'\. Never rename the provider/m);
  });

  it('gives the apiserver a timeout above a longer broker budget, so the broker answers first', async () => {
    const document = (await printed(['--config', slowBudget.path])) as {
      resources: { providers: { kms: { timeout: string } }[] }[];
    };
    assert.equal(document.resources[0]?.providers[0]?.kms.timeout, '4700ms');
  });

  it('takes the name, more resources and an identity fallback after the kms provider', async () => {
    const document = await printed([
      '--config',
      defaults.path,
      '--name',
      'prod-kms',
      '--resource',
      'configmaps',
      '--resource',
      'deployments.apps',
      'configmaps',
      '--identity-fallback',
    ]);
    assert.deepEqual(document, {
      apiVersion: 'apiserver.config.k8s.io/v1',
      kind: 'EncryptionConfiguration',
      resources: [
        {
          resources: ['secrets', 'configmaps', 'deployments.apps'],
          providers: [
            {
              kms: {
                apiVersion: 'v2',
                name: 'prod-kms',
                endpoint: `unix://${defaults.socket}`,
                timeout: '3s',
              },
            },
            { identity: {} },
          ],
        },
      ],
    });
  });

  it('lists a wildcard that covers secrets on its own, since the apiserver refuses overlaps', async () => {
    const document = (await printed(['--config', defaults.path, '--resource', '*.*'])) as {
      resources: { resources: string[] }[];
    };
    assert.deepEqual(document.resources[0]?.resources, ['*.*']);
  });

  it('prints a KMS v1 provider with its cache size (the apiserver default, or the one asked for)', async () => {
    const kmsOf = (document: unknown) =>
      (document as { resources: { providers: { kms: unknown }[] }[] }).resources[0]?.providers[0]?.kms;
    assert.deepEqual(kmsOf(await printed(['--config', defaults.path, '--kms-api', 'v1'])), {
      apiVersion: 'v1',
      name: 'kms-broker',
      endpoint: `unix://${defaults.socket}`,
      cachesize: 1000,
      timeout: '3s',
    });
    const uncached = await printed(['--config', defaults.path, '--kms-api', 'v1', '--cachesize', '-1']);
    assert.equal((kmsOf(uncached) as { cachesize: number }).cachesize, -1);
  });

  it('refuses bad options with exit status 2, one error line, and nothing on stdout', async () => {
    const cases: [string[], RegExp][] = [
      [['--name', 'kms:broker'], /^error: --name 'kms:broker': .*never ':'/],
      [['--name', ''], /^error: --name '': /],
      [['--cachesize', '100'], /^error: --cachesize applies to --kms-api v1 only/],
      [['--kms-api', 'v1', '--cachesize', '0'], /^error: --cachesize '0': a non-zero integer/],
      [['--kms-api', 'v1', '--cachesize', '12abc'], /^error: --cachesize '12abc': /],
      [['--kms-api', 'v3'], /^error: option '--kms-api <version>' argument 'v3' is invalid/],
      [['--resource', 'Secrets'], /^error: --resource 'Secrets': a lowercase plural resource/],
      [
        ['--resource', 'deployments.apps', '*.apps'],
        /^error: --resource '\*\.apps' overlaps 'deployments\.apps'/,
      ],
      [['--resource', 'secrets', '*.'], /^error: --resource '\*\.' overlaps 'secrets'/],
    ];
    for (const [args, message] of cases) {
      const run = await encryptionConfig(['--config', defaults.path, ...args]);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.equal(run.stdout, '', args.join(' '));
      assert.match(run.stderr, message, args.join(' '));
    }
  });

  it('reads the config KMS_BROKER_CONFIG names without --config, and names the path tried when there is none', async () => {
    const viaEnv = await runCli(['encryption-config'], {
      env: { ...process.env, KMS_BROKER_CONFIG: defaults.path },
    });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(viaEnv.stdout, /^kind: EncryptionConfiguration$/m);
    const nowhere = `${defaults.dir}/nowhere.yaml`;
    const none = await runCli(['encryption-config'], { env: { ...process.env, KMS_BROKER_CONFIG: nowhere } });
    assert.equal(none.code, 1);
    assert.equal(
      none.stderr,
      `kms-broker: CONFIG_INVALID: no config file at ${nowhere}; pass --config FILE or set KMS_BROKER_CONFIG=FILE\n`,
    );
  });

  it('refuses a v1 provider for a broker that does not serve KMS v1', async () => {
    const run = await encryptionConfig(['--config', v1Disabled.path, '--kms-api', 'v1']);
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^error: --kms-api v1: .* sets kmsV1\.enabled: false/);
  });

  it('fails with exit status 1 and the config error when the broker config is missing or invalid', async () => {
    const missing = await encryptionConfig(['--config', `${defaults.dir}/missing.yaml`]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stdout, '');
    assert.match(
      missing.stderr,
      /^kms-broker: CONFIG_INVALID: no config file at .*missing\.yaml; pass --config FILE or set KMS_BROKER_CONFIG=FILE\n$/,
    );
    const invalid = brokerConfig({ sockett: '/run/x.sock' });
    configs.push(invalid);
    const run = await encryptionConfig(['--config', invalid.path]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^kms-broker: CONFIG_INVALID: .*sockett/);
  });
});
