// One Shamir share as one line an operator can copy from paper and type back:
//
//   kbes1-2of5-m3-1a2b3c4d-ABCDE-FGHIJ-…-KLMNOPQR
//   │     │    │  │        │             └ checksum: SHA-256 of everything before it, 5 bytes
//   │     │    │  │        └ the share bytes, RFC 4648 base32 in groups of 5
//   │     │    │  └ fingerprint of the public key: shares of different key pairs never mix
//   │     │    └ threshold M
//   │     └ share i of N
//   └ format version
//
// Base32 is case-insensitive and has no 0, 1 or 8 to mistake for O, I or B; spaces and breaks are
// ignored, so a share may be written across lines. The checksum catches any mistyped character.
import { createHash } from 'node:crypto';
import { BrokerError } from '../errors.ts';

export interface EscrowShare {
  /** 1..total: which share this is, as its file is named. */
  readonly index: number;
  readonly threshold: number;
  readonly total: number;
  readonly fingerprint: string;
  /** The share as `shamir-secret-sharing` made it (its x coordinate is the last byte). */
  readonly bytes: Buffer;
}

const PREFIX = 'kbes1';
const GROUP = 5;
const CHECKSUM_BYTES = 5;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const MAX_SHARE_TEXT = 4096;

export function formatShare(share: EscrowShare): string {
  const data = base32(share.bytes).match(new RegExp(`.{1,${GROUP}}`, 'g')) ?? [];
  return `${header(share)}-${data.join('-')}-${checksum(share)}`;
}

/** Parses a share's text; `source` (its file) names it in every refusal. */
export function parseShare(text: string, source: string): EscrowShare {
  const refuse = (what: string) =>
    new BrokerError('ESCROW_SHARES_INVALID', `share ${source}: ${what}; check it against the paper copy`);
  if (text.length > MAX_SHARE_TEXT) throw refuse('is far longer than a share');
  const fields = text.replace(/\s+/g, '').split('-');
  const [prefix, position, threshold, fingerprint] = fields;
  if (prefix?.toLowerCase() !== PREFIX || fields.length < 6)
    throw refuse(`is not a kms-broker escrow share (those start with ${PREFIX}-)`);
  const place = /^(\d{1,3})of(\d{1,3})$/i.exec(position ?? '');
  const needs = /^m(\d{1,3})$/i.exec(threshold ?? '');
  if (place === null || needs === null || !/^[0-9a-f]{8}$/i.test(fingerprint ?? ''))
    throw refuse('its header (share i of N, threshold, key fingerprint) is garbled');
  const data = fields.slice(4, -1).join('').toUpperCase();
  const bad = [...data].find(character => !ALPHABET.includes(character));
  if (bad !== undefined) throw refuse(`'${bad}' is not a base32 character (A-Z, 2-7)`);
  const share: EscrowShare = {
    index: Number(place[1]),
    total: Number(place[2]),
    threshold: Number(needs[1]),
    fingerprint: String(fingerprint).toLowerCase(),
    bytes: fromBase32(data),
  };
  if (fields.at(-1)?.toUpperCase() !== checksum(share))
    throw refuse('its checksum does not match: a character is mistyped or missing');
  if (share.index < 1 || share.index > share.total || share.threshold < 2 || share.threshold > share.total)
    throw refuse(`share ${share.index} of ${share.total} with threshold ${share.threshold} cannot be`);
  return share;
}

function header(share: EscrowShare): string {
  return `${PREFIX}-${share.index}of${share.total}-m${share.threshold}-${share.fingerprint}`;
}

function checksum(share: EscrowShare): string {
  const digest = createHash('sha256')
    .update(`${header(share)}-`)
    .update(share.bytes)
    .digest();
  return base32(digest.subarray(0, CHECKSUM_BYTES));
}

function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xfff;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return bits > 0 ? out + ALPHABET[(value << (5 - bits)) & 31] : out;
}

/** Decodes checked base32 (only ALPHABET characters); trailing partial bits are dropped. */
function fromBase32(text: string): Buffer {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const character of text) {
    value = ((value << 5) | ALPHABET.indexOf(character)) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}
