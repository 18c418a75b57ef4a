// The human form of an explanation: one "field: value" line each, and the broker's wraps as
// a table. Only what the Explanation carries is printed: names, versions and lengths.
import type { BrokerExplanation, Explanation, UnwrapVerdict } from './explain.ts';

const FORMAT_NAMES: Readonly<Record<NonNullable<Explanation['format']>, string>> = {
  'kms-v2': 'KMS v2 (k8s:enc:kms:v2)',
  'kms-v1': 'KMS v1 (k8s:enc:kms:v1)',
  aescbc: 'aescbc (k8s:enc:aescbc:v1, a local key)',
  aesgcm: 'aesgcm (k8s:enc:aesgcm:v1, a local key)',
  secretbox: 'secretbox (k8s:enc:secretbox:v1, a local key)',
  identity: 'identity: stored in plain text',
};

/** `table` lays out the wraps; it is the CLI's, handed in to keep this folder free of it. */
export function renderExplanation(
  explanation: Explanation,
  table: (headers: readonly string[], rows: readonly (readonly string[])[]) => string,
): string {
  const fields: [string, string][] = [['source', `${explanation.source} (${explanation.bytes} bytes)`]];
  if (explanation.format === undefined)
    fields.push(['format', 'none'], ['problem', explanation.problem ?? '-']);
  else fields.push(['format', FORMAT_NAMES[explanation.format]]);
  if (explanation.provider !== undefined) fields.push(['provider', explanation.provider]);
  if (explanation.keyId !== undefined)
    fields.push([
      'key_id',
      `${explanation.keyId}${explanation.keyIdIsBrokers === true ? ' (the shape kms-broker issues)' : ''}`,
    ]);
  const object = explanation.encryptedObject;
  if (object !== undefined) {
    fields.push(['DEK source', `${object.dekSourceType}, ${object.dekSourceBytes} bytes encrypted`]);
    fields.push(['data', `${object.dataBytes} bytes encrypted`]);
    fields.push(['annotations', object.annotations.join(' ') || '-']);
  }
  if (explanation.dekCiphertextBytes !== undefined)
    fields.push(['DEK', `${explanation.dekCiphertextBytes} bytes encrypted`]);
  if (explanation.keyName !== undefined) fields.push(['key name', explanation.keyName]);
  if (explanation.plainText !== undefined)
    fields.push(['plain text', `${explanation.plainText}; anyone who reads etcd reads it`]);
  if (explanation.broker !== undefined) fields.push(['envelope', envelopeLine(explanation.broker)]);
  const width = Math.max(...fields.map(([name]) => name.length)) + 1;
  const lines = fields.map(([name, value]) => `${`${name}:`.padEnd(width)}  ${value}\n`).join('');
  if (explanation.broker?.owner !== 'broker') return lines;
  const rows = explanation.broker.wraps.map(wrap => [
    wrap.backend,
    wrap.version,
    wrap.mechanism,
    wrap.annotation === undefined ? wrap.location : `annotation ${wrap.annotation}`,
    `${wrap.wrappedBytes} bytes`,
    verdictText(wrap.unwrap),
  ]);
  return `${lines}\n${table(['BACKEND', 'VERSION', 'MECHANISM', 'WHERE', 'WRAPPED', 'UNWRAP NOW'], rows)}`;
}

function envelopeLine(broker: BrokerExplanation): string {
  switch (broker.owner) {
    case 'other':
      return "not kms-broker's: another KMS plugin wrapped this DEK";
    case 'broker-undecodable':
      return `kms-broker's, but it does not decode: ${broker.reason}; the broker cannot decrypt it`;
    case 'broker': {
      const formats = [...new Set(broker.wraps.map(wrap => wrap.envelopeFormat))].sort();
      const bound = formats.includes(3)
        ? ', wraps bound to one seed'
        : ', wraps not bound (the first format)';
      return `kms-broker envelope format ${formats.join(', ')}${bound}; ${broker.wraps.length} wrap(s)`;
    }
  }
}

function verdictText(verdict: UnwrapVerdict): string {
  return verdict.now === 'yes' ? 'yes' : `${verdict.now} (${verdict.reason})`;
}
