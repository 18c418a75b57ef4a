// A real SoftHSM2 token per test suite, created by the same script the demo uses.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const createTokenScript = new URL('../../softhsm/create-token.sh', import.meta.url).pathname;

export interface SoftHsmToken {
  readonly dir: string;
  readonly label: string;
  readonly conf: string;
  readonly pinFile: string;
  /** Environment for a process that uses this token. */
  readonly env: NodeJS.ProcessEnv;
  remove(): void;
}

export function createToken(label = 'kms', dir = mkdtempSync(join(tmpdir(), 'kmsb-hsm-'))): SoftHsmToken {
  execFileSync('bash', [createTokenScript, dir, label], { stdio: 'pipe' });
  const conf = join(dir, 'softhsm2.conf');
  return {
    dir,
    label,
    conf,
    pinFile: join(dir, 'pin'),
    env: { ...process.env, SOFTHSM2_CONF: conf },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Adds another token to the same token folder (same SOFTHSM2_CONF). */
export function addToken(token: SoftHsmToken, label: string, pin: string): void {
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', label, '--so-pin', '12345678', '--pin', pin],
    {
      env: token.env,
      stdio: 'pipe',
    },
  );
}
