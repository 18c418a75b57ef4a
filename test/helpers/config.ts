// Broker configurations for tests, written as an operator would write them.
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

/** Writes a config file in a fresh folder; the socket and state live beside it. */
export function writeConfig(
  token: SoftHsmToken,
  overrides: Record<string, unknown> = {},
  dir?: string,
): TestConfig {
  const folder = dir ?? mkdtempSync(join(tmpdir(), 'kmsb-cfg-'));
  const socket = join(folder, 'kms.sock');
  const statePath = join(folder, 'state.json');
  const values = {
    socket,
    state: { path: statePath },
    log: { level: 'info' },
    health: { probeIntervalMs: 500 },
    ...(token !== undefined && { backends: [pkcs11Backend(token)], failover: { order: ['hsm'] } }),
    ...overrides,
  };
  const path = join(folder, 'config.yaml');
  writeFileSync(path, stringify(values));
  return { dir: folder, path, socket, statePath, values };
}
