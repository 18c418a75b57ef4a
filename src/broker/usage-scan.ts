// What one read of the cluster's etcd found (`kms-broker usage`), in the form the scanner
// reports it to the broker and the broker keeps it in its state: which stored objects
// need which backend key versions. The evidence is grouped by wrap set (the backend
// versions one envelope carries) so that whether a version is still needed can be judged
// at retire time against the versions that are readable then, not those of scan time.
import { Type, type Static } from '@sinclair/typebox';
import { backendNameSchema, MAX_BACKENDS } from '../backends/config-schema.ts';

/** How stored values were written, as the scanner tells them apart. */
export const STORED_FORMATS = ['kms-v2', 'kms-v1', 'aescbc', 'aesgcm', 'secretbox', 'identity'] as const;
export type StoredFormat = (typeof STORED_FORMATS)[number];

/** Bounds that keep a scan a few hundred KiB at most in the state file. */
export const MAX_SCAN_RESOURCES = 512;
export const MAX_SCAN_KEY_IDS = 256;
export const MAX_SCAN_WRAP_SETS = 1024;

const count = Type.Integer({ minimum: 0 });
/** A resource as the EncryptionConfiguration names it: `secrets`, `widgets.example.com`. */
const resourceName = Type.String({ minLength: 1, maxLength: 253 });
const formatCounts = Type.Partial(
  Type.Object(Object.fromEntries(STORED_FORMATS.map(format => [format, count])), {
    additionalProperties: false,
  }),
);
const countsByResource = Type.Record(resourceName, count, { maxProperties: MAX_SCAN_RESOURCES });

const wrapSchema = Type.Object(
  { backend: backendNameSchema, version: Type.String({ minLength: 1, maxLength: 128 }) },
  { additionalProperties: false },
);

export const usageScanSchema = Type.Object(
  {
    /** When the scan began reading: objects written after it may be missing from it. */
    scannedAt: Type.String({
      pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$',
    }),
    /** The etcd revision every page was read at (decimal, it is an int64). */
    revision: Type.String({ pattern: '^[0-9]{1,20}$' }),
    prefix: Type.String({ minLength: 1, maxLength: 256 }),
    durationMs: count,
    /** Every value under the prefix, the formats counted by kind. */
    objects: count,
    formats: formatCounts,
    resources: Type.Array(
      Type.Object(
        { resource: resourceName, objects: count, formats: formatCounts },
        { additionalProperties: false },
      ),
      { maxItems: MAX_SCAN_RESOURCES },
    ),
    /** KMS values per key_id (the broker's and any other plugin's). */
    keyIds: Type.Array(
      Type.Object(
        { keyId: Type.String({ minLength: 1, maxLength: 1024 }), objects: count },
        { additionalProperties: false },
      ),
      { maxItems: MAX_SCAN_KEY_IDS },
    ),
    /** The broker's envelopes, grouped by the wraps they carry. */
    wrapSets: Type.Array(
      Type.Object(
        {
          wraps: Type.Array(wrapSchema, { minItems: 1, maxItems: MAX_BACKENDS }),
          objects: count,
          resources: countsByResource,
        },
        { additionalProperties: false },
      ),
      { maxItems: MAX_SCAN_WRAP_SETS },
    ),
    /** Values under the broker's KMS provider that did not decode to its envelope. */
    undecodable: Type.Object(
      { objects: count, resources: countsByResource },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export type UsageScan = Static<typeof usageScanSchema>;
export type ScannedWrap = Static<typeof wrapSchema>;
