// `kms-broker hsm-probe`: what a PKCS#11 token offers and which of the broker's mechanisms
// work on it, before a config is written. Logs in once (a wrong PIN is never retried), creates
// only session objects and destroys them, and prints the backend block it recommends.
// Exit 0 when some mechanism round-trips, 3 when none does; 1 a failure, 2 usage.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { backendNameSchema, envVarName } from '../backends/config-schema.ts';
import { pkcs11BackendSchema } from '../backends/pkcs11/pkcs11-schema.ts';
import { probeToken } from '../backends/pkcs11/probe/probe.ts';
import type { ProbeTarget } from '../backends/pkcs11/probe/recommend.ts';
import { readSecret, type SecretReader } from '../secrets.ts';
import { renderProbe } from './hsm-probe-view.ts';

export const EXIT_NOTHING_WORKS = 3;

export interface HsmProbeOptions {
  readonly module: string;
  readonly token?: string;
  readonly tokenSerial?: string;
  readonly slotId?: string;
  readonly pinFile?: string;
  readonly pinEnv?: string;
  readonly keyLabel: string;
  readonly name: string;
  readonly json?: boolean;
  readonly all?: boolean;
}

type Usage = (message: string) => never;

function matches(schema: { readonly pattern?: string; readonly maxLength?: number }, value: string): boolean {
  return new RegExp(schema.pattern ?? '').test(value) && value.length <= (schema.maxLength ?? Infinity);
}

function tokenChoice(options: HsmProbeOptions, usage: Usage): ProbeTarget['token'] {
  const given = [options.token, options.tokenSerial, options.slotId].filter(value => value !== undefined);
  if (given.length !== 1)
    usage('error: give exactly one of --token <label>, --token-serial <serial> and --slot-id <n>');
  if (options.token !== undefined) return { tokenLabel: options.token };
  if (options.tokenSerial !== undefined) return { tokenSerial: options.tokenSerial };
  const slotId = Number(options.slotId);
  if (!/^\d+$/.test(options.slotId ?? '') || !Number.isSafeInteger(slotId))
    usage(`error: --slot-id: '${options.slotId ?? ''}' is not a slot number (a whole number, 0 or more)`);
  return { slotId };
}

function pinChoice(options: HsmProbeOptions, usage: Usage): ProbeTarget['pin'] {
  if ((options.pinFile === undefined) === (options.pinEnv === undefined))
    usage('error: give exactly one of --pin-file <file> and --pin-env <VAR> (a PIN is never an argument)');
  if (options.pinFile !== undefined) return { pinFile: resolve(options.pinFile) };
  const pinEnv = options.pinEnv ?? '';
  // The value is not echoed: a PIN typed here by mistake would land in the terminal's history
  // and in this message.
  if (!matches(envVarName, pinEnv))
    usage('error: --pin-env takes the name of an environment variable (letters, digits, _), not the PIN');
  return { pinEnv };
}

/** The probe's target from the command line; usage errors name the option and the fix. */
export function targetFrom(options: HsmProbeOptions, usage: Usage): ProbeTarget {
  const module = resolve(options.module);
  if (!existsSync(module))
    usage(
      `error: --module ${module}: no such file; give the path of the token's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so; an HSM's client installs its own)`,
    );
  if (!matches(backendNameSchema, options.name))
    usage(
      `error: --name '${options.name}': a backend name is lowercase letters, digits and '-' (at most 63)`,
    );
  if (!matches(pkcs11BackendSchema.properties.keyLabel, options.keyLabel))
    usage(`error: --key-label '${options.keyLabel}': letters, digits, '_', '.' and '-', at most 48`);
  return {
    name: options.name,
    module,
    token: tokenChoice(options, usage),
    pin: pinChoice(options, usage),
    keyLabel: options.keyLabel,
  };
}

/** The PIN's source named as the command line names it, in messages about it. */
const probeSecrets: SecretReader = (source, what) =>
  readSecret({ ...source, envKey: '--pin-env' }, what.replace(/^backend \S+ PIN$/, 'the PIN'));

export async function hsmProbeCommand(options: HsmProbeOptions, usage: Usage): Promise<number> {
  const target = targetFrom(options, usage);
  const result = await probeToken(target, probeSecrets);
  process.stdout.write(
    options.json === true
      ? `${JSON.stringify(result, null, 2)}\n`
      : await renderProbe(result, { all: options.all === true }),
  );
  return result.recommended === null ? EXIT_NOTHING_WORKS : 0;
}
