// The policy docs/backends/vault-transit.md gives operators, applied as written to a real
// OpenBao server: it allows every call the broker makes (log in, read the key, create it,
// encrypt, decrypt, rotate, renew the token), and each of its capabilities is needed by one
// of them, so the documented policy is exactly the least privilege.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { VaultTransitBackend } from '../../src/backends/vault-transit/vault-transit-backend.ts';
import { startDeadline } from '../../src/deadline.ts';
import { BrokerError } from '../../src/errors.ts';
import { createLogger } from '../../src/log.ts';
import { readSecret } from '../../src/secrets.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import {
  createToken,
  createTransitKey,
  enableTransit,
  startDevServer,
  writePolicy,
  type BaoServer,
} from '../helpers/openbao.ts';

const MOUNT = 'policy-check';
/** Long enough for every call, short enough that renewal (at two thirds) comes within the test. */
const TOKEN_TTL_SECONDS = 2;

/** `path "<path>" { capabilities = [...] }` lines, as the doc writes them. */
type Policy = Map<string, string[]>;
type Call = readonly [name: string, run: () => Promise<unknown>];

/** The doc's HCL blocks: the policy, then the line that replaces one for createIfMissing. */
function documentedPolicy(): { base: Policy; createIfMissing: Policy } {
  const doc = readFileSync(new URL('../../docs/backends/vault-transit.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('## The policy the broker needs'), doc.indexOf('## Rotation'));
  const blocks = [...section.matchAll(/```hcl\n([\s\S]*?)```/g)].map(match => parsePolicy(match[1] ?? ''));
  assert.equal(blocks.length, 2, 'the policy section has the policy and its createIfMissing line');
  return { base: blocks[0] as Policy, createIfMissing: blocks[1] as Policy };
}

function parsePolicy(hcl: string): Policy {
  const policy: Policy = new Map();
  for (const match of hcl.matchAll(/^path "([^"]+)"\s*\{\s*capabilities = \[([^\]]*)\]\s*\}$/gm)) {
    const capabilities = [...(match[2] ?? '').matchAll(/"([a-z]+)"/g)].map(cap => cap[1] ?? '');
    policy.set(match[1] ?? '', capabilities);
  }
  assert.ok(policy.size > 0, `no policy lines in:\n${hcl}`);
  return policy;
}

/** The policy as HCL, for a key of the test's own on the test's mount. */
function render(policy: Policy, key: string): string {
  return [...policy]
    .map(([path, capabilities]) => {
      const own = path.replace(/^transit\//, `${MOUNT}/`).replace(/\/kek(\/|$)/, `/${key}$1`);
      return `path "${own}" { capabilities = [${capabilities.map(cap => `"${cap}"`).join(', ')}] }`;
    })
    .join('\n');
}

/** Every policy that lacks exactly one of `policy`'s capabilities, named `path:capability`. */
function withOneLess(policy: Policy): [string, Policy][] {
  return [...policy].flatMap(([path, capabilities]) =>
    capabilities.map((capability): [string, Policy] => {
      const fewer = new Map(policy);
      const rest = capabilities.filter(other => other !== capability);
      if (rest.length === 0) fewer.delete(path);
      else fewer.set(path, rest);
      return [`${path}:${capability}`, fewer];
    }),
  );
}

describe('the Vault policy in docs/backends/vault-transit.md, on OpenBao', () => {
  let server: BaoServer;
  let variant = 0;

  before(async () => {
    server = await startDevServer();
    await enableTransit(server, MOUNT);
  });
  after(async () => server.stop());

  /**
   * Runs the broker's Vault calls in the order a start and a rotation make them, with a token
   * of `policy` alone: with `createIfMissing`, on a key that does not exist yet, else on one
   * made beforehand. Returns the first call refused, 'renew' when only the token's renewal
   * failed, or undefined when every call went through.
   */
  async function firstRefusedCall(policy: Policy, createIfMissing: boolean): Promise<string | undefined> {
    const key = `kek-${++variant}`;
    if (!createIfMissing) await createTransitKey(server, key, MOUNT);
    await writePolicy(server, key, render(policy, key));
    const token = await createToken(server, {
      policies: [key],
      ttl: TOKEN_TTL_SECONDS,
      renewable: true,
      noDefaultPolicy: true,
    });
    const tokenFile = `${server.dir}/${key}-token`;
    writeFileSync(tokenFile, token, { mode: 0o600 });
    const log = memoryLog();
    const backend = new VaultTransitBackend(
      {
        name: 'vault',
        type: 'vault-transit',
        address: server.address,
        mount: MOUNT,
        key,
        requestTimeoutMs: 2000,
        maxConcurrency: 4,
        rotationPoll: { intervalMs: 30000, stableForMs: 60000 },
        createIfMissing,
        auth: { method: 'token', tokenFile },
      },
      { readSecret, readFile: readFileSync, logger: createLogger('info', log.stream) },
    );
    const deadline = () => startDeadline(5000);
    const aad = Buffer.from('envelope header');
    let wrapped: Buffer = Buffer.alloc(0);
    const calls: Call[] = [
      ['login', () => backend.open()],
      ['read key', () => backend.listVersions(deadline())],
      ...(createIfMissing ? [['create key', () => backend.createVersion(deadline())] as Call] : []),
      [
        'encrypt',
        async () => {
          const plaintext = randomBytes(32);
          wrapped = await backend.wrap({ plaintext, keyVersion: '1', aad, deadline: deadline() });
        },
      ],
      [
        'decrypt',
        () =>
          backend.unwrap({
            wrapped,
            keyVersion: '1',
            mechanism: backend.mechanism,
            aad,
            deadline: deadline(),
          }),
      ],
      ['rotate', () => backend.createVersion(deadline())],
    ];
    try {
      for (const [name, call] of calls) {
        try {
          await call();
        } catch (error) {
          assert.ok(error instanceof BrokerError, `${name}: ${String(error)}`);
          assert.match(error.code, /^BACKEND_(PERMISSION_DENIED|AUTH_FAILED)$/, `${name}: ${error.message}`);
          return name;
        }
      }
      // Renewal comes at two thirds of the token's life.
      await sleep(TOKEN_TTL_SECONDS * 1000 * 0.85);
      return /Vault token renewal failed/.test(log.text()) ? 'renew' : undefined;
    } finally {
      await backend.close();
    }
  }

  it('allows every call the broker makes, and each capability is needed by one of them', async () => {
    const { base } = documentedPolicy();
    const expected: Record<string, string> = {
      'transit/encrypt/kek:update': 'encrypt',
      'transit/decrypt/kek:update': 'decrypt',
      'transit/keys/kek:read': 'read key',
      'transit/keys/kek/rotate:update': 'rotate',
      'auth/token/lookup-self:read': 'login',
      'auth/token/renew-self:update': 'renew',
    };
    const variants = withOneLess(base);
    assert.deepEqual(variants.map(([name]) => name).sort(), Object.keys(expected).sort());
    const [all, ...refused] = await Promise.all([
      firstRefusedCall(base, false),
      ...variants.map(([, policy]) => firstRefusedCall(policy, false)),
    ]);
    assert.equal(all, undefined);
    assert.deepEqual(Object.fromEntries(variants.map(([name], index) => [name, refused[index]])), expected);
  });

  it('with createIfMissing, creating the key takes "update" on transit/keys/<key>; "create" is not enough', async () => {
    const { base, createIfMissing } = documentedPolicy();
    const creating: Policy = new Map([...base, ...createIfMissing]);
    assert.deepEqual(creating.get('transit/keys/kek'), ['read', 'update']);
    const withCreate: Policy = new Map([...base, ['transit/keys/kek', ['create', 'read']]]);
    const withoutUpdate: Policy = new Map([...base, ['transit/keys/kek', ['read']]]);
    const results = await Promise.all([
      firstRefusedCall(creating, true),
      firstRefusedCall(withCreate, true),
      firstRefusedCall(withoutUpdate, true),
    ]);
    assert.deepEqual(results, [undefined, 'create key', 'create key']);
  });
});
