// Broker configurations for tests, written as an operator would write them.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { SOFTHSM_MODULE, type SoftHsmToken } from './softhsm.ts';

export interface TestConfig {
  readonly dir: string;
  readonly path: string;
  readonly socket: string;
  readonly statePath: string;
  readonly adminSocket: string;
  readonly adminToken: string;
  readonly viewerToken: string;
  readonly values: Record<string, unknown>;
}

export function pkcs11Backend(
  token: SoftHsmToken,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name: 'hsm',
    type: 'pkcs11',
    module: SOFTHSM_MODULE,
    tokenLabel: token.label,
    pinFile: token.pinFile,
    keyLabel: 'kek',
    generateIfMissing: true,
    ...overrides,
  };
}

/** A Transit backend on a test OpenBao server, with the given auth settings. */
export function vaultBackend(
  address: string,
  auth: Record<string, unknown>,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name: 'vault',
    type: 'vault-transit',
    address,
    key: 'kek',
    createIfMissing: true,
    auth,
    ...overrides,
  };
}

/** An escrow backend on the public key `kms-broker escrow init` wrote. */
export function escrowBackend(publicKeyFile: string, name = 'escrow'): Record<string, unknown> {
  return { name, type: 'escrow', publicKeyFile };
}

/**
 * Writes a config file in a fresh folder; the socket and state live beside it. Without a
 * token, `overrides` must name the backends and the failover order.
 */
export function writeConfig(
  token: SoftHsmToken | undefined,
  overrides: Record<string, unknown> = {},
  dir?: string,
): TestConfig {
  const folder = dir ?? mkdtempSync(join(tmpdir(), 'kmsb-cfg-'));
  const socket = join(folder, 'kms.sock');
  const statePath = join(folder, 'state.json');
  const adminSocket = join(folder, 'admin.sock');
  const adminToken = randomBytes(24).toString('base64url');
  const viewerToken = randomBytes(24).toString('base64url');
  writeFileSync(join(folder, 'admin-token'), adminToken + '\n', { mode: 0o600 });
  writeFileSync(join(folder, 'viewer-token'), viewerToken + '\n', { mode: 0o600 });
  const values = {
    socket,
    // A unix socket per test broker: brokers of parallel tests never compete for a port.
    admin: {
      listen: `unix://${adminSocket}`,
      tokens: [
        { name: 'ops', role: 'admin', file: join(folder, 'admin-token') },
        { name: 'dashboards', role: 'viewer', file: join(folder, 'viewer-token') },
      ],
    },
    state: { path: statePath },
    log: { level: 'debug' },
    health: { probeIntervalMs: 500 },
    ...(token !== undefined && { backends: [pkcs11Backend(token)], failover: { order: ['hsm'] } }),
    ...overrides,
  };
  const path = join(folder, 'config.yaml');
  writeFileSync(path, stringify(values));
  return { dir: folder, path, socket, statePath, values, adminSocket, adminToken, viewerToken };
}
