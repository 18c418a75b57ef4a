// Configuration loading: defaults filled in, the result deeply frozen, and every mistake a
// CONFIG_INVALID whose message names the exact key path an operator has to fix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stringify } from 'yaml';
import { parseConfig, validateConfig } from '../../src/config/load.ts';
import { BrokerError } from '../../src/errors.ts';
import { readSecret } from '../../src/secrets.ts';
import type { Pkcs11BackendConfig } from '../../src/backends/pkcs11/pkcs11-schema.ts';
import type { VaultTransitBackendConfig } from '../../src/backends/vault-transit/vault-transit-schema.ts';
import { brokerError } from './expect-error.ts';

const minimalYaml = `
socket: /run/kms-broker/kms.sock
state:
  path: /var/lib/kms-broker/state.json
backends:
  - name: hsm
    type: pkcs11
    module: /usr/lib/softhsm/libsofthsm2.so
    tokenLabel: kms
    pinFile: /etc/kms-broker/pin
    keyLabel: kek
failover:
  order: [hsm]
`;

type Raw = Record<string, unknown> & { backends: Record<string, unknown>[] };

/** A fresh, mutable copy of the minimal config as plain data. */
function minimal(): Raw {
  return {
    socket: '/run/kms-broker/kms.sock',
    state: { path: '/var/lib/kms-broker/state.json' },
    backends: [
      {
        name: 'hsm',
        type: 'pkcs11',
        module: '/usr/lib/softhsm/libsofthsm2.so',
        tokenLabel: 'kms',
        pinFile: '/etc/kms-broker/pin',
        keyLabel: 'kek',
      },
    ],
    failover: { order: ['hsm'] },
  };
}

function firstBackend(raw: Raw): Record<string, unknown> {
  return raw.backends[0] as Record<string, unknown>;
}

/** Every object reachable from `value`, with its path, for the deep-freeze check. */
function objectsIn(value: unknown, path = '(root)'): [string, object][] {
  if (typeof value !== 'object' || value === null) return [];
  return [
    [path, value],
    ...Object.entries(value).flatMap(([key, child]) => objectsIn(child, `${path}.${key}`)),
  ];
}

describe('config loading', () => {
  it('fills in every default for a minimal config', () => {
    const config = parseConfig(minimalYaml);
    assert.equal(config.socket, '/run/kms-broker/kms.sock');
    assert.equal(config.socketMode, '0600');
    assert.deepEqual(config.log, { level: 'info' });
    assert.deepEqual(config.timeouts, { callMs: 2500, shutdownGraceMs: 10000 });
    assert.deepEqual(config.health, {
      probeIntervalMs: 10000,
      canaryIntervalMs: 300000,
      failureThreshold: 3,
      openCooldownMs: 5000,
    });
    assert.deepEqual(config.backends, [
      {
        name: 'hsm',
        type: 'pkcs11',
        module: '/usr/lib/softhsm/libsofthsm2.so',
        tokenLabel: 'kms',
        pinFile: '/etc/kms-broker/pin',
        keyLabel: 'kek',
        sessions: 4,
        mechanism: 'aes-gcm',
        generateIfMissing: false,
      },
    ]);
    assert.deepEqual(config.failover, { order: ['hsm'], wrap: 'first', hysteresisMs: 30000 });
    assert.deepEqual(config.admin, {
      enabled: true,
      listen: '127.0.0.1:8787',
      tokens: [],
      metricsAuth: false,
      console: { enabled: false },
    });
    assert.deepEqual(config.retirement, { scanAfterWriteMs: 90000 });
    assert.deepEqual(config.kmsV1, { enabled: true });
  });

  it('keeps values that are set instead of the defaults', () => {
    const raw = minimal();
    Object.assign(raw, { socketMode: '0660', log: { level: 'debug' }, timeouts: { callMs: 1000 } });
    Object.assign(firstBackend(raw), { sessions: 8, threads: 3, generateIfMissing: true });
    const config = validateConfig(raw);
    assert.equal(config.socketMode, '0660');
    assert.equal(config.log.level, 'debug');
    assert.deepEqual(config.timeouts, { callMs: 1000, shutdownGraceMs: 10000 });
    const backend = config.backends[0] as Pkcs11BackendConfig;
    assert.equal(backend.sessions, 8);
    assert.equal(backend.threads, 3);
    assert.equal(backend.generateIfMissing, true);
  });

  it('takes 1 to 64 crypto threads for a PKCS#11 backend', () => {
    for (const threads of [0, 65, 1.5]) {
      const raw = minimal();
      Object.assign(firstBackend(raw), { threads });
      assert.throws(() => validateConfig(raw), brokerError('CONFIG_INVALID', 'backends[0].threads'));
    }
  });

  it('returns a deeply frozen config', () => {
    const objects = objectsIn(parseConfig(minimalYaml));
    assert.ok(objects.length >= 9, `only ${objects.length} objects found`);
    for (const [path, object] of objects) assert.ok(Object.isFrozen(object), `${path} is not frozen`);
  });

  it('leaves the caller’s raw object untouched (defaults go into a copy)', () => {
    const raw = minimal();
    validateConfig(raw);
    assert.deepEqual(raw, minimal());
    assert.equal(Object.isFrozen(raw), false);
  });

  it('accepts a socket path of exactly 107 bytes', () => {
    const raw = minimal();
    raw.socket = '/' + 's'.repeat(106);
    assert.equal(validateConfig(raw).socket.length, 107);
  });

  it('accepts tokenSerial and pinEnv in place of tokenLabel and pinFile', () => {
    const raw = minimal();
    const backend = firstBackend(raw);
    delete backend.tokenLabel;
    delete backend.pinFile;
    Object.assign(backend, { tokenSerial: '1234abcd', pinEnv: 'HSM_PIN' });
    const config = validateConfig(raw);
    const loaded = config.backends[0] as Pkcs11BackendConfig;
    assert.equal(loaded.tokenSerial, '1234abcd');
    assert.equal(loaded.pinEnv, 'HSM_PIN');
  });

  describe('rejects with CONFIG_INVALID naming the key path', () => {
    const cases: { name: string; change: (raw: Raw) => void; expected: string }[] = [
      {
        name: 'an unknown top-level key',
        change: raw => (raw.foo = 1),
        expected: 'foo: unknown key',
      },
      {
        name: 'an unknown (misspelt) backend key',
        change: raw => {
          const backend = firstBackend(raw);
          backend.tokenLable = backend.tokenLabel;
          delete backend.tokenLabel;
        },
        expected: 'backends[0].tokenLable: unknown key',
      },
      {
        name: 'an unknown nested key',
        change: raw => (raw.timeouts = { callMS: 100 }),
        expected: 'timeouts.callMS: unknown key',
      },
      {
        name: 'a missing top-level key',
        change: raw => delete raw.socket,
        expected: 'socket: required key is missing',
      },
      {
        name: 'a missing nested key',
        change: raw => (raw.state = {}),
        expected: 'state.path: required key is missing',
      },
      {
        name: 'a missing backend key',
        change: raw => delete firstBackend(raw).keyLabel,
        expected: 'backends[0].keyLabel: required key is missing',
      },
      {
        name: 'a wrong type',
        change: raw => (raw.timeouts = { callMs: 'fast' }),
        expected: 'timeouts.callMs: must be integer',
      },
      {
        name: 'a wrong type in a backend',
        change: raw => (firstBackend(raw).sessions = '4'),
        expected: 'backends[0].sessions: must be integer',
      },
      {
        name: 'a number out of range',
        change: raw => (raw.timeouts = { callMs: 10 }),
        expected: 'timeouts.callMs: must be >= 50',
      },
      {
        name: 'a relative socket path',
        change: raw => (raw.socket = 'run/kms.sock'),
        expected: 'socket: must be an absolute path (starting with /)',
      },
      {
        name: 'an uppercase backend name',
        change: raw => (firstBackend(raw).name = 'HSM'),
        expected: 'backends[0].name: must match pattern',
      },
      {
        name: 'a backend name with an underscore',
        change: raw => (firstBackend(raw).name = 'my_hsm'),
        expected: 'backends[0].name: must match pattern',
      },
      {
        name: 'an unknown backend type',
        change: raw => (firstBackend(raw).type = 'vault'),
        expected: 'backends[0].type: must be one of "pkcs11", "vault-transit"',
      },
      {
        name: 'a log level that is not one of the choices',
        change: raw => (raw.log = { level: 'verbose' }),
        expected: 'log.level: must be one of "fatal", "error", "warn", "info", "debug", "trace"',
      },
      {
        name: 'both tokenLabel and tokenSerial',
        change: raw => (firstBackend(raw).tokenSerial = '1234'),
        expected: 'backends[0]: set exactly one of tokenLabel, tokenSerial and slotId',
      },
      {
        name: 'both tokenLabel and slotId',
        change: raw => (firstBackend(raw).slotId = 3),
        expected: 'backends[0]: set exactly one of tokenLabel, tokenSerial and slotId',
      },
      {
        name: 'neither tokenLabel nor tokenSerial',
        change: raw => delete firstBackend(raw).tokenLabel,
        expected: 'backends[0]: set exactly one of tokenLabel, tokenSerial and slotId',
      },
      {
        name: 'both pinFile and pinEnv',
        change: raw => (firstBackend(raw).pinEnv = 'HSM_PIN'),
        expected: 'backends[0]: set exactly one of pinFile and pinEnv',
      },
      {
        name: 'neither pinFile nor pinEnv',
        change: raw => delete firstBackend(raw).pinFile,
        expected: 'backends[0]: set exactly one of pinFile and pinEnv',
      },
      {
        name: 'a PIN written into the config',
        change: raw => (firstBackend(raw).pin = '1234'),
        expected: 'backends[0].pin: unknown key',
      },
      {
        name: 'duplicate backend names',
        change: raw => raw.backends.push({ ...firstBackend(raw), tokenLabel: 'other' }),
        expected: "backends[1].name: duplicate backend name 'hsm'",
      },
      {
        name: 'failover.order naming an unknown backend',
        change: raw => (raw.failover = { order: ['hsm', 'nope'] }),
        expected: "failover.order[1]: no backend is named 'nope'",
      },
      {
        name: 'an escrow backend outside the failover order',
        change: raw =>
          raw.backends.push({ name: 'escrow', type: 'escrow', publicKeyFile: '/etc/kb/escrow.pem' }),
        expected:
          "backends[1]: escrow backend 'escrow' wraps only as a member of the failover order; add it to failover.order",
      },
      {
        name: 'a failover order of escrow backends alone',
        change: raw => {
          raw.backends.push({ name: 'escrow', type: 'escrow', publicKeyFile: '/etc/kb/escrow.pem' });
          raw.failover = { order: ['escrow'] };
        },
        expected: 'failover.order: lists only escrow backends, which never unwrap; add a backend that can',
      },
      {
        name: 'a state path equal to the socket path',
        change: raw => (raw.state = { path: raw.socket }),
        expected: 'state.path: must differ from socket',
      },
      {
        name: 'a socket path longer than sun_path allows (108 bytes)',
        change: raw => (raw.socket = '/' + 's'.repeat(107)),
        expected: 'socket: the path is 108 bytes; unix sockets allow at most 107',
      },
      {
        name: 'a socket path of 61 characters but 121 UTF-8 bytes',
        change: raw => (raw.socket = '/' + 'é'.repeat(60)),
        expected: 'socket: the path is 121 bytes',
      },
      {
        name: 'the console on a unix-socket admin listener',
        change: raw =>
          (raw.admin = {
            listen: 'unix:///run/kms-broker/admin.sock',
            tokens: [{ name: 'ops', role: 'admin', file: '/etc/kms-broker/admin-token' }],
            console: { enabled: true },
          }),
        expected:
          'admin.console.enabled: a browser cannot reach a unix socket; set admin.listen to HOST:PORT',
      },
      {
        name: 'the console without a token to sign in with',
        change: raw => (raw.admin = { console: { enabled: true } }),
        expected: 'admin.console.enabled: signing in needs a token; add one to admin.tokens',
      },
      {
        name: 'no backends at all',
        change: raw => (raw.backends = []),
        expected: 'backends: must NOT have fewer than 1 items',
      },
    ];
    for (const { name, change, expected } of cases) {
      it(name, () => {
        const raw = minimal();
        change(raw);
        // Through YAML, as an operator writes it, and from plain data.
        assert.throws(
          () => parseConfig(stringify(raw)),
          brokerError('CONFIG_INVALID', `config: ${expected}`),
        );
        assert.throws(() => validateConfig(raw), brokerError('CONFIG_INVALID', `config: ${expected}`));
      });
    }

    it('invalid YAML, naming the source', () => {
      assert.throws(
        () => parseConfig('socket: [/run/kms.sock\n', '/etc/kms-broker/config.yaml'),
        brokerError('CONFIG_INVALID', /^\/etc\/kms-broker\/config\.yaml: not valid YAML: /),
      );
    });

    it('a document that is not a mapping', () => {
      for (const text of ['just a string', '- a\n- list']) {
        assert.throws(
          () => parseConfig(text),
          brokerError('CONFIG_INVALID', 'config: (root): must be object'),
        );
      }
    });

    it('an empty document, as missing required keys', () => {
      assert.throws(() => parseConfig(''), brokerError('CONFIG_INVALID', 'required key is missing'));
    });

    it('an unquoted octal socketMode (YAML reads 0600 as the number 600)', () => {
      assert.throws(
        () => parseConfig(`socketMode: 0600\n${minimalYaml}`),
        brokerError('CONFIG_INVALID', 'config: socketMode: must be string'),
      );
    });
  });
});

describe('vault-transit backend config', () => {
  function withVault(backend: Record<string, unknown>): Raw {
    const raw = minimal();
    raw.backends = [
      {
        name: 'vault',
        type: 'vault-transit',
        address: 'https://vault.example:8200',
        key: 'kek',
        auth: { method: 'token', tokenFile: '/etc/kms-broker/vault-token' },
        ...backend,
      },
    ];
    raw.failover = { order: ['vault'] };
    return raw;
  }

  it('fills in the defaults', () => {
    const backend = validateConfig(withVault({})).backends[0] as VaultTransitBackendConfig;
    assert.equal(backend.mount, 'transit');
    assert.equal(backend.requestTimeoutMs, 2000);
    assert.equal(backend.maxConcurrency, 32);
    assert.equal(backend.createIfMissing, false);
    assert.deepEqual(backend.rotationPoll, { intervalMs: 30000, stableForMs: 60000 });
  });

  it('accepts each auth method with what it needs', () => {
    const methods: Record<string, unknown>[] = [
      { method: 'token', tokenEnv: 'VAULT_TOKEN' },
      { method: 'approle', roleId: 'r', secretIdFile: '/etc/s', mount: 'approle-k8s' },
      { method: 'jwt', role: 'kms-broker', jwtFile: '/var/run/secrets/token' },
    ];
    for (const auth of methods)
      assert.doesNotThrow(() => validateConfig(withVault({ auth })), JSON.stringify(auth));
    assert.doesNotThrow(() =>
      validateConfig(
        withVault({ auth: { method: 'cert' }, tls: { certFile: '/etc/c.pem', keyFile: '/etc/k.pem' } }),
      ),
    );
  });

  const cases: { name: string; backend: Record<string, unknown>; expected: string }[] = [
    {
      name: 'a token written into the config',
      backend: { auth: { method: 'token', token: 's.abc' } },
      expected: 'backends[0].auth.token: unknown key',
    },
    {
      name: 'both tokenFile and tokenEnv',
      backend: { auth: { method: 'token', tokenFile: '/t', tokenEnv: 'T' } },
      expected: 'backends[0].auth: set exactly one of tokenFile and tokenEnv',
    },
    {
      name: 'approle without its secret_id file',
      backend: { auth: { method: 'approle', roleId: 'r' } },
      expected: 'backends[0].auth.secretIdFile: auth method approle needs it',
    },
    {
      name: 'a key another method uses',
      backend: { auth: { method: 'jwt', role: 'r', jwtFile: '/j', roleId: 'x' } },
      expected: 'backends[0].auth.roleId: not used by auth method jwt',
    },
    {
      name: 'cert auth without a client certificate',
      backend: { auth: { method: 'cert' } },
      expected:
        'backends[0].auth: auth method cert needs an https:// address and tls.certFile and tls.keyFile',
    },
    {
      name: 'TLS settings on an http address',
      backend: { address: 'http://127.0.0.1:8200', tls: { caFile: '/ca.pem' } },
      expected: 'backends[0].tls: TLS settings need an https:// address',
    },
    {
      name: 'a client certificate without its key',
      backend: { tls: { certFile: '/c.pem' } },
      expected: 'backends[0].tls: set both certFile and keyFile, or neither',
    },
    {
      name: 'an address with a path',
      backend: { address: 'https://vault.example:8200/v1' },
      expected: 'backends[0].address: must match pattern',
    },
    {
      name: 'an unknown auth method',
      backend: { auth: { method: 'kerberos' } },
      expected: 'backends[0].auth.method: must be one of "token", "approle", "jwt", "cert"',
    },
  ];
  for (const { name, backend, expected } of cases) {
    it(`rejects ${name}`, () => {
      assert.throws(() => validateConfig(withVault(backend)), brokerError('CONFIG_INVALID', expected));
    });
  }
});

describe('config errors report every problem, with the key that caused it', () => {
  function message(raw: unknown): string {
    try {
      validateConfig(raw);
    } catch (error) {
      assert.ok(error instanceof BrokerError && error.code === 'CONFIG_INVALID', String(error));
      return error.message;
    }
    assert.fail('the config was accepted');
  }

  it('lists every problem at once, top level and each backend, each with its key path', () => {
    const raw = minimal();
    raw.timeouts = { callMs: 'fast' };
    raw.foo = 1;
    Object.assign(firstBackend(raw), { sessions: '4' });
    raw.backends.push({ ...firstBackend(raw), name: 'Bad_Name', sessions: 4 });
    assert.equal(
      message(raw),
      [
        'config: 4 problems:',
        '  foo: unknown key',
        '  timeouts.callMs: must be integer',
        '  backends[0].sessions: must be integer',
        '  backends[1].name: must match pattern "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"',
      ].join('\n'),
    );
  });

  it('names the misspelt key beside the required key it stands for', () => {
    const raw = minimal();
    const backend = firstBackend(raw);
    backend.keyLable = backend.keyLabel;
    delete backend.keyLabel;
    assert.equal(
      message(raw),
      "config: backends[0]: unknown key 'keyLable'; required key 'keyLabel' is missing (did you mean it?)",
    );
  });

  it('names an unrelated unknown key beside a missing one, and suggests an optional key a typo meant', () => {
    const raw = minimal();
    const backend = firstBackend(raw);
    backend.tokenLable = backend.tokenLabel;
    delete backend.tokenLabel;
    delete backend.keyLabel;
    assert.equal(
      message(raw),
      "config: backends[0]: unknown key 'tokenLable' (did you mean tokenLabel?); required key 'keyLabel' is missing",
    );
  });
});

describe('a secret written where its file or variable name belongs is never echoed', () => {
  const secret = 's3cret-1234';
  const cases: { name: string; backend: (raw: Raw) => void; expected: string }[] = [
    {
      name: 'a PIN in pinEnv',
      backend: raw => {
        delete firstBackend(raw).pinFile;
        firstBackend(raw).pinEnv = secret;
      },
      expected: 'backends[0].pinEnv: must be the name of an environment variable',
    },
    {
      name: 'a PIN in pinFile',
      backend: raw => (firstBackend(raw).pinFile = secret),
      expected: 'backends[0].pinFile: must be an absolute path (starting with /)',
    },
    {
      name: 'a Vault token in tokenEnv',
      backend: raw => {
        raw.backends = [
          {
            name: 'vault',
            type: 'vault-transit',
            address: 'https://vault.example:8200',
            key: 'kek',
            auth: { method: 'token', tokenEnv: secret },
          },
        ];
        raw.failover = { order: ['vault'] };
      },
      expected: 'backends[0].auth.tokenEnv: must be the name of an environment variable',
    },
    {
      name: 'an AppRole secret_id in secretIdFile',
      backend: raw => {
        raw.backends = [
          {
            name: 'vault',
            type: 'vault-transit',
            address: 'https://vault.example:8200',
            key: 'kek',
            auth: { method: 'approle', roleId: 'r', secretIdFile: secret },
          },
        ];
        raw.failover = { order: ['vault'] };
      },
      expected: 'backends[0].auth.secretIdFile: must be an absolute path (starting with /)',
    },
  ];
  for (const { name, backend, expected } of cases) {
    it(name, () => {
      const raw = minimal();
      backend(raw);
      assert.throws(
        () => validateConfig(raw),
        (error: unknown) => {
          assert.ok(error instanceof BrokerError && error.code === 'CONFIG_INVALID', String(error));
          assert.ok(error.message.includes(expected), error.message);
          assert.ok(!error.message.includes(secret), error.message);
          return true;
        },
      );
    });
  }

  it('a PIN that happens to be a valid variable name, when the variable is not set', () => {
    const pin = 'Hsm2024pin';
    delete process.env[pin];
    assert.throws(
      () => readSecret({ env: pin, envKey: 'pinEnv' }, 'backend hsm PIN'),
      (error: unknown) => {
        assert.ok(error instanceof BrokerError && error.code === 'SECRET_UNREADABLE', String(error));
        assert.equal(
          error.message,
          'backend hsm PIN: the environment variable that pinEnv names is not set; set it to the secret, or correct pinEnv',
        );
        return true;
      },
    );
  });
});

describe('config loading: the shared state (cluster)', () => {
  const etcd = { endpoints: ['https://127.0.0.1:2379'] };

  it('fills in the lease, promotion and warning bounds', () => {
    const config = validateConfig({ ...minimal(), etcd, cluster: { name: 'prod' } });
    assert.deepEqual(config.cluster, {
      name: 'prod',
      leaseTtlMs: 15000,
      promotionTimeoutMs: 30000,
      convergenceWarnMs: 120000,
    });
  });

  it('refuses a cluster without etcd, naming the section to add', () => {
    assert.throws(
      () => validateConfig({ ...minimal(), cluster: { name: 'prod' } }),
      brokerError('CONFIG_INVALID', 'cluster: the shared state needs etcd.endpoints'),
    );
  });

  it('refuses a promotion timeout a silent member could outlast', () => {
    assert.throws(
      () =>
        validateConfig({
          ...minimal(),
          etcd,
          cluster: { name: 'prod', leaseTtlMs: 30000, promotionTimeoutMs: 20000 },
        }),
      brokerError('CONFIG_INVALID', 'cluster.promotionTimeoutMs: must exceed cluster.leaseTtlMs'),
    );
  });

  it('refuses a cluster name that cannot be part of an etcd prefix', () => {
    assert.throws(
      () => validateConfig({ ...minimal(), etcd, cluster: { name: 'Prod Cluster' } }),
      brokerError('CONFIG_INVALID', 'cluster.name'),
    );
  });
});
