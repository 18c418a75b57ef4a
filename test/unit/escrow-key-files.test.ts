// The escrow public key file: both blocks in either order, and a refusal naming the file and
// what is wrong for anything else.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  decodePrivateKey,
  encodePrivateKey,
  fingerprint,
  formatPublicKeyFile,
  generateEscrowKeyPair,
  parsePublicKeyFile,
  publicKeyOf,
  samePublicKey,
  PRIVATE_KEY_BYTES,
} from '../../src/escrow/key-files.ts';
import { brokerError } from './expect-error.ts';

const { publicKey, privateKey } = generateEscrowKeyPair();
const text = formatPublicKeyFile(publicKey);
const blocks = text.match(/-----BEGIN PUBLIC KEY-----[^-]+-----END PUBLIC KEY-----\n/g) ?? [];

describe('escrow key files', () => {
  it('reads back the public key it writes, in either block order', () => {
    assert.equal(blocks.length, 2);
    assert.ok(samePublicKey(parsePublicKeyFile(text, 'a.pem'), publicKey));
    assert.ok(samePublicKey(parsePublicKeyFile(`${blocks[1]}${blocks[0]}`, 'b.pem'), publicKey));
    assert.ok(text.includes(fingerprint(publicKey)));
  });

  it('names the file and what is wrong', () => {
    const refused = (body: string, what: string) =>
      assert.throws(
        () => parsePublicKeyFile(body, '/etc/escrow.pem'),
        brokerError('ESCROW_KEY_INVALID', `escrow public key /etc/escrow.pem: ${what}`),
      );
    refused(blocks[0] as string, 'lacks its x25519 PUBLIC KEY block');
    refused('', 'lacks its ml-kem-768 PUBLIC KEY block');
    refused(`${blocks[0]}${blocks[0]}`, 'holds two ml-kem-768 keys');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({
      format: 'pem',
      type: 'spki',
    });
    refused(`${text}${rsa.toString()}`, 'holds a rsa key');
    const pkcs8 = privateKey.x25519.export({ format: 'pem', type: 'pkcs8' }).toString();
    refused(`${text}${pkcs8}`, 'holds a PRIVATE KEY block');
    refused(
      (blocks[0] as string).replace(/\n[^\n]+\n/, '\n') + blocks[1], // a line of it missing
      'a PUBLIC KEY block is not a valid public key',
    );
  });

  it('encodes the private key in 97 bytes that rebuild the same key pair', () => {
    const bytes = encodePrivateKey(privateKey);
    assert.equal(bytes.length, PRIVATE_KEY_BYTES);
    assert.equal(PRIVATE_KEY_BYTES, 97);
    const rebuilt = decodePrivateKey(bytes);
    assert.ok(rebuilt !== undefined && samePublicKey(publicKeyOf(rebuilt), publicKey));
    assert.equal(decodePrivateKey(bytes.subarray(1)), undefined);
    assert.equal(decodePrivateKey(Buffer.concat([Buffer.of(2), bytes.subarray(1)])), undefined);
  });
});
