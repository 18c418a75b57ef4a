// The human output of `kms-broker hsm-probe`: the token, its session limits, the mechanisms
// the broker cares about (every one with --all), GCM IV behaviour, hints, the trials, and the
// recommended backend block as YAML to paste under `backends:`.
import type { ProbeResult } from '../backends/pkcs11/probe/probe.ts';
import type { TrialResult } from '../backends/pkcs11/probe/mechanism-trials.ts';
import type { SessionReport } from '../backends/pkcs11/probe/token-report.ts';
import { mechanismName } from '../backends/pkcs11/probe/token-report.ts';
import { noCapStated } from '../backends/pkcs11/session-limit.ts';
import { DEFAULT_SESSIONS } from '../backends/pkcs11/pkcs11-schema.ts';
import { documentOf } from './output.ts';
import { table } from './table.ts';

const yesNo = (value: boolean | null, unknown = 'not offered') =>
  value === null ? unknown : value ? 'yes' : 'no';

function capText(count: number): string {
  return noCapStated(count) ? `no cap (${count <= 0 ? 0 : 'not stated'})` : String(count);
}

function openText(sessions: SessionReport): string {
  if (sessions.openSessions === null) return 'not stated by the token';
  const rw = sessions.openRwSessions === null ? '' : ` (${sessions.openRwSessions} rw)`;
  return `${sessions.openSessions}${rw}, this probe's own included`;
}

function sessionRows(sessions: SessionReport): string[][] {
  const pool =
    sessions.cap === null
      ? `no cap lowers it: sessions: ${sessions.defaultPoolSize} (the default) is used as configured`
      : `at most ${sessions.brokerPoolLimit ?? '?'} of the token's ${sessions.cap} (the anchor session and a quarter of the cap stay free); the default sessions: ${DEFAULT_SESSIONS} gives ${sessions.defaultPoolSize}`;
  return [
    ['max sessions', capText(sessions.maxSessions)],
    ['max rw sessions', capText(sessions.maxRwSessions)],
    ['open now', openText(sessions)],
    ['broker pool', pool],
  ];
}

function variantOf(trial: TrialResult): string {
  if (trial.kwpMechanism !== undefined)
    return `${mechanismName(trial.kwpMechanism)} (0x${trial.kwpMechanism.toString(16)})`;
  if (trial.oaepHash !== undefined) return trial.oaepHash;
  if (trial.mechanism === 'aes-gcm') return 'host IV';
  if (trial.mechanism !== 'aes-gcm-hsm-iv') return '';
  return trial.ivConvention === undefined ? 'token IV' : `token IV (${trial.ivConvention})`;
}

function trialRow(trial: TrialResult): string[] {
  return [
    trial.mechanism,
    variantOf(trial),
    trial.outcome === 'not-offered' ? 'not offered' : trial.outcome,
    trial.reason ?? '',
    trial.ms === undefined ? '-' : `${trial.ms.toFixed(1)} ms`,
  ];
}

export async function renderProbe(result: ProbeResult, options: { readonly all: boolean }): Promise<string> {
  const { token, gcmIv } = result;
  const mechanisms = options.all ? token.mechanisms : token.mechanisms.filter(entry => entry.relevant);
  const sections = [
    table(
      ['TOKEN', ''],
      [
        ['label', token.label],
        ['manufacturer', token.manufacturer],
        ['model', token.model],
        ['serial', token.serial],
        ['firmware', `${token.firmware} (hardware ${token.hardware})`],
        ['flags', token.flags.join(', ') || '-'],
      ],
    ),
    table(['SESSIONS', ''], sessionRows(token.sessions)),
    `MECHANISMS (${options.all ? 'every one the token lists' : "the broker's; --all: every one the token lists"})\n` +
      table(
        ['TYPE', 'NAME', 'FLAGS', 'KEY SIZES'],
        mechanisms.map(entry => [
          entry.hex,
          entry.name,
          entry.flags.join(',') || '-',
          `${entry.minKeySize}-${entry.maxKeySize}`,
        ]),
      ),
    table(
      ['GCM IV', ''],
      [
        ['host IV accepted', yesNo(gcmIv.hostIvAccepted)],
        ['token generates IV', yesNo(gcmIv.tokenGeneratesIv)],
        ...(gcmIv.tokenIvReturned === null
          ? []
          : [
              [
                'token IV returned',
                gcmIv.tokenIvReturned === 'appended' ? 'appended to the output' : 'in the IV field',
              ],
            ]),
      ],
    ),
    `HINTS (from what the token says and does; not a certification)\n${
      result.hints.map(hint => `- ${hint}\n`).join('') || '- none\n'
    }`,
    'TRIALS (on temporary session keys, destroyed afterwards)\n' +
      table(['MECHANISM', 'VARIANT', 'RESULT', 'REASON', 'TIME'], result.trials.map(trialRow)),
  ];
  const recommended = result.recommended;
  sections.push(
    recommended === null
      ? 'RECOMMENDED: none: no mechanism of the broker round-trips on this token (exit 3)\n'
      : `RECOMMENDED (${recommended.backend.mechanism}: ${recommended.because}):\n` +
          (await documentOf('yaml', { backends: [recommended.backend] })),
  );
  return sections.join('\n');
}
