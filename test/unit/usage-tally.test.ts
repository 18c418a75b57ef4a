// How a scan's values add up to a UsageScan (the contract with the broker), and what the
// report makes of it: versions needed, thin envelopes, undecodable values.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Value } from '@sinclair/typebox/value';
import { MAX_SCAN_KEY_IDS, MAX_SCAN_RESOURCES, usageScanSchema } from '../../src/broker/usage-scan.ts';
import { reportSections, thinSummary, versionUsage } from '../../src/usage/report.ts';
import { OTHER_KEY_IDS, OTHER_RESOURCES, UsageTally } from '../../src/usage/tally.ts';
import {
  brokerKeyId,
  brokerV1Value,
  brokerV2Value,
  identityValue,
  kmsV2Value,
  localValue,
} from '../helpers/stored-values.ts';

const facts = { scannedAt: '2026-12-07T00:00:00.000Z', revision: '1234', durationMs: 10 };
const oldKey = brokerKeyId('old');
const newKey = brokerKeyId('new');
const both = [
  { backend: 'hsm', version: '2' },
  { backend: 'vault', version: '5' },
];

/** A small cluster: every format, two key_ids, a thin seed, another plugin, a damaged value. */
function sampleTally(): UsageTally {
  const tally = new UsageTally('/registry/');
  for (let index = 0; index < 3; index++)
    tally.add(`/registry/secrets/ns/full-${index}`, brokerV2Value(both, newKey));
  tally.add('/registry/configmaps/ns/full', brokerV2Value(both, newKey));
  tally.add('/registry/secrets/ns/thin', brokerV2Value([{ backend: 'hsm', version: '1' }], oldKey));
  tally.add('/registry/secrets/ns/v1', brokerV1Value(both));
  tally.add(
    '/registry/secrets/ns/aws',
    kmsV2Value('aws', { keyId: 'arn:aws:kms:key/1', ciphertext: randomBytes(100) }),
  );
  tally.add(
    '/registry/secrets/ns/bad',
    kmsV2Value('kms-broker', { keyId: newKey, ciphertext: randomBytes(30) }),
  );
  tally.add('/registry/secrets/ns/cbc', localValue('aescbc'));
  tally.add('/registry/secrets/ns/gcm', localValue('aesgcm'));
  tally.add('/registry/secrets/ns/box', localValue('secretbox'));
  tally.add('/registry/services/specs/default/kubernetes', identityValue());
  tally.add('/registry/example.com/widgets/ns/w', brokerV2Value(both, newKey));
  return tally;
}

describe('usage scan: tally', () => {
  const scan = sampleTally().result(facts);

  it('produces a UsageScan the broker accepts', () => {
    assert.ok(
      Value.Check(usageScanSchema, scan),
      JSON.stringify([...Value.Errors(usageScanSchema, scan)][0]),
    );
    assert.equal(scan.prefix, '/registry/');
    assert.equal(scan.revision, '1234');
  });

  it('counts every value by format', () => {
    assert.equal(scan.objects, 13);
    assert.deepEqual(scan.formats, {
      aescbc: 1,
      aesgcm: 1,
      identity: 1,
      'kms-v1': 1,
      'kms-v2': 8,
      secretbox: 1,
    });
  });

  it('counts per resource, by format', () => {
    assert.deepEqual(scan.resources, [
      { resource: 'configmaps', objects: 1, formats: { 'kms-v2': 1 } },
      {
        resource: 'secrets',
        objects: 10,
        formats: { aescbc: 1, aesgcm: 1, 'kms-v1': 1, 'kms-v2': 6, secretbox: 1 },
      },
      { resource: 'services', objects: 1, formats: { identity: 1 } },
      { resource: 'widgets.example.com', objects: 1, formats: { 'kms-v2': 1 } },
    ]);
  });

  it("counts KMS v2 values per key_id, the broker's and other plugins'", () => {
    assert.deepEqual(scan.keyIds, [
      { keyId: newKey, objects: 6 },
      { keyId: 'arn:aws:kms:key/1', objects: 1 },
      { keyId: oldKey, objects: 1 },
    ]);
  });

  it("groups the broker's envelopes (v2 and v1) by the wraps they carry", () => {
    assert.deepEqual(scan.wrapSets, [
      { wraps: [{ backend: 'hsm', version: '1' }], objects: 1, resources: { secrets: 1 } },
      {
        wraps: both,
        objects: 6,
        resources: { configmaps: 1, secrets: 4, 'widgets.example.com': 1 },
      },
    ]);
  });

  it("counts as undecodable only values under the broker's provider, not other plugins'", () => {
    assert.deepEqual(scan.undecodable, { objects: 1, resources: { secrets: 1 } });
  });

  it('says per backend key version how many objects carry a wrap under it', () => {
    assert.deepEqual(versionUsage(scan), [
      { backend: 'hsm', version: '1', objects: 1 },
      { backend: 'hsm', version: '2', objects: 6 },
      { backend: 'vault', version: '5', objects: 6 },
    ]);
  });

  it('finds thin envelopes against the configured backends', () => {
    const thin = thinSummary(scan, ['hsm', 'vault']);
    assert.equal(thin.objects, 1);
    assert.deepEqual([...thin.missing], [['vault', 1]]);
    assert.equal(thinSummary(scan, ['hsm']).objects, 0);
    const threeBackends = thinSummary(scan, ['hsm', 'vault', 'aws-kms']);
    assert.equal(threeBackends.objects, 7);
  });

  it('says in the report when the configured backends are unknown', () => {
    const sections = reportSections(scan, { known: false, reason: 'the broker is not reachable: x' });
    const thin = sections.find(section => section.title === 'thin envelopes');
    assert.match(
      thin?.lines?.[0] ?? '',
      /not judged: the configured backends are unknown \(the broker is not reachable/,
    );
    const known = reportSections(scan, { known: true, names: ['hsm', 'vault'] });
    assert.match(
      known.find(section => section.title === 'thin envelopes')?.lines?.[0] ?? '',
      /^1 objects lack/,
    );
    assert.ok(known.some(section => section.title === 'undecodable'));
  });

  it('is empty but valid for an empty prefix', () => {
    const empty = new UsageTally('/registry/').result(facts);
    assert.ok(Value.Check(usageScanSchema, empty));
    assert.deepEqual(
      { objects: empty.objects, formats: empty.formats, wrapSets: empty.wrapSets },
      { objects: 0, formats: {}, wrapSets: [] },
    );
  });

  it('stays within the schema bounds: resources and key_ids beyond them are summed up', () => {
    const tally = new UsageTally('/registry/');
    for (let index = 0; index < MAX_SCAN_RESOURCES + 20; index++)
      tally.add(`/registry/r${index}/x`, identityValue());
    for (let index = 0; index < MAX_SCAN_KEY_IDS + 10; index++)
      tally.add(
        '/registry/secrets/ns/x',
        kmsV2Value('other', { keyId: `key-${index}`, ciphertext: randomBytes(8) }),
      );
    const big = tally.result(facts);
    assert.ok(Value.Check(usageScanSchema, big));
    assert.equal(big.resources.length, MAX_SCAN_RESOURCES);
    assert.equal(
      big.resources.find(entry => entry.resource === OTHER_RESOURCES)?.objects,
      21 + MAX_SCAN_KEY_IDS + 10,
    );
    assert.equal(big.keyIds.length, MAX_SCAN_KEY_IDS);
    assert.equal(big.keyIds.at(-1)?.keyId, OTHER_KEY_IDS);
    assert.equal(
      big.keyIds.reduce((sum, entry) => sum + entry.objects, 0),
      MAX_SCAN_KEY_IDS + 10,
    );
  });
});
