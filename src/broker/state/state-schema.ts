// The key registry's persistent form (BrokerState), whichever store holds it: its schema,
// its types, and the one parser every store reads it with. A state that does not parse is
// STATE_CORRUPT: it may be the only record of which versions are retired, so no store
// ever overwrites it.
import { Type, type Static } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import { backendNameSchema, MAX_BACKENDS, wrapModeSchema } from '../../backends/config-schema.ts';
import { describeSchemaErrors } from '../../config/schema-errors.ts';
import { BrokerError } from '../../errors.ts';
import { usageScanSchema } from '../usage-scan.ts';

const versionSchema = Type.Object(
  {
    version: Type.String({ minLength: 1, maxLength: 128 }),
    fingerprint: Type.String({ minLength: 1, maxLength: 512 }),
    createdAt: Type.String({ minLength: 1 }),
    state: Type.Union([Type.Literal('active'), Type.Literal('retired')]),
    /** When a Decrypt last needed this version (flushed periodically, not per call). */
    lastDecryptAt: Type.Optional(Type.String({ minLength: 1 })),
    decryptCount: Type.Optional(Type.Integer({ minimum: 0 })),
    /**
     * When it stopped being its backend's write version. Apiservers may go on writing under it
     * until they re-seed, so only a usage scan from some time after this proves what needs it.
     */
    writeEndedAt: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);

/** The failover setting, as stored and as the admin API reads and writes it. */
export const failoverSettingSchema = Type.Object(
  {
    order: Type.Array(backendNameSchema, { minItems: 1, maxItems: MAX_BACKENDS }),
    wrap: wrapModeSchema,
  },
  { additionalProperties: false },
);

export const MAX_THIN_SEEDS = 64;

const thinSeedSchema = Type.Object(
  {
    keyId: Type.String({ minLength: 1, maxLength: 1024 }),
    /** The backends whose wraps some seed of this key_id lacks. */
    missing: Type.Array(backendNameSchema, { minItems: 1, maxItems: MAX_BACKENDS }),
    /** When the first such seed went out. */
    since: Type.String({ minLength: 1 }),
  },
  { additionalProperties: false },
);

const stateSchema = Type.Object(
  {
    format: Type.Literal(1),
    generation: Type.Integer({ minimum: 0 }),
    backends: Type.Record(
      Type.String(),
      Type.Object(
        { writeVersion: Type.String({ minLength: 1 }), versions: Type.Array(versionSchema, { minItems: 1 }) },
        { additionalProperties: false },
      ),
    ),
    /**
     * A failover setting changed at run time (admin API), with the config's setting it
     * replaced: when the config file is edited later, the file wins again.
     */
    failover: Type.Optional(
      Type.Object(
        { current: failoverSettingSchema, basedOn: failoverSettingSchema },
        { additionalProperties: false },
      ),
    ),
    /**
     * key_ids whose seeds went out without some backends' wraps, so that healing survives a
     * restart; the newest MAX_THIN_SEEDS are kept.
     */
    thinSeeds: Type.Optional(Type.Array(thinSeedSchema, { maxItems: MAX_THIN_SEEDS })),
    /** The newest usage scan of the cluster's etcd: the evidence retirement is judged by. */
    lastScan: Type.Optional(usageScanSchema),
    /**
     * With wrap: first, the backend writes moved to when it is not the first of the order.
     * Shared, so that every broker of a control plane writes with the same backend.
     */
    writer: Type.Optional(backendNameSchema),
  },
  { additionalProperties: false },
);

export type FailoverSetting = Static<typeof failoverSettingSchema>;
export type ThinSeed = Static<typeof thinSeedSchema>;
export type StoredVersion = Static<typeof versionSchema>;
export type BrokerState = Static<typeof stateSchema>;

const validateState = new Ajv({ strict: true }).compile<BrokerState>(stateSchema);

/** The state a broker starts from when its store holds none. */
export function emptyState(): BrokerState {
  return { format: 1, generation: 0, backends: {} };
}

export function parseState(text: string, source: string): BrokerState {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BrokerError(
      'STATE_CORRUPT',
      `state file ${source} is not valid JSON; restore it from a backup or move it away to rebuild from the backends`,
    );
  }
  if (!validateState(value)) {
    throw new BrokerError(
      'STATE_CORRUPT',
      `state file ${source} is invalid: ${describeSchemaErrors(validateState.errors)}; restore it from a backup or move it away to rebuild from the backends`,
    );
  }
  for (const [name, backend] of Object.entries(value.backends)) {
    if (!backend.versions.some(version => version.version === backend.writeVersion)) {
      throw new BrokerError(
        'STATE_CORRUPT',
        `state file ${source}: backend ${name} writes with version ${backend.writeVersion}, which it does not list`,
      );
    }
  }
  return value;
}
