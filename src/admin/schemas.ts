// Request and response schemas of the admin API. Routes validate with them and the OpenAPI
// document is generated from them: one source.
import { Type } from '@sinclair/typebox';
import { backendNameSchema as backendName, failoverSettingSchema, usageScanSchema } from '../broker/ports.ts';
import { BREAKER_STATES } from '../metrics/metrics.ts';
import { MAX_PARAM_LENGTH } from './limits.ts';

const strict = { additionalProperties: false } as const;
const versionName = Type.String({ minLength: 1, maxLength: MAX_PARAM_LENGTH });

export const problemSchema = Type.Object(
  {
    type: Type.String({ description: 'urn:kms-broker:error:<CODE>, stable per error code' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String(),
  },
  { $id: 'Problem' },
);

/** The failover setting: the one schema the state store keeps it in. */
export const failoverSchema = failoverSettingSchema;

export const statusSchema = Type.Object({
  keyId: Type.String(),
  healthz: Type.String(),
  kmsApiVersion: Type.String(),
  writeVersions: Type.Record(Type.String(), Type.String()),
  failover: failoverSchema,
  /** Backends whose breaker is open: writes may still succeed, with fewer wraps or elsewhere. */
  degraded: Type.Array(Type.String()),
  /** key_ids whose seeds went out without some backends' wraps (since start). */
  underReplicatedKeyIds: Type.Array(Type.String()),
  uptimeSeconds: Type.Number(),
  version: Type.String(),
  /** With `cluster`: whether etcd answers and every broker advertises the committed key_id. */
  cluster: Type.Optional(
    Type.Object({ etcdReachable: Type.Boolean(), converged: Type.Boolean(), members: Type.Integer() }),
  ),
});

export const backendsSchema = Type.Object({
  backends: Type.Array(
    Type.Object({
      name: Type.String(),
      type: Type.String(),
      healthy: Type.Boolean(),
      breaker: Type.Union(BREAKER_STATES.map(state => Type.Literal(state))),
      reason: Type.Optional(Type.String()),
      lastProbeAt: Type.Optional(Type.String()),
      lastProbeMs: Type.Optional(Type.Number()),
      errors: Type.Record(Type.String(), Type.Integer()),
      writeVersion: Type.Optional(Type.String()),
      writeOnly: Type.Optional(Type.Literal(true)),
    }),
  ),
});

const versionView = Type.Object({
  version: Type.String(),
  role: Type.Union([Type.Literal('write'), Type.Literal('active'), Type.Literal('retired')]),
  createdAt: Type.String(),
  lastDecryptAt: Type.Optional(Type.String()),
  decryptCount: Type.Integer(),
  decryptsSinceStart: Type.Integer(),
});
export const keysSchema = Type.Object({ backends: Type.Record(Type.String(), Type.Array(versionView)) });

/** The caller: the token's name (with the client certificate's subject under mTLS) and role. */
export const whoamiSchema = Type.Object({
  name: Type.String(),
  role: Type.Union([Type.Literal('viewer'), Type.Literal('admin')]),
});

export const rotateResultSchema = Type.Object({
  backend: Type.String(),
  version: Type.String(),
  keyId: Type.String(),
});

export const versionStateSchema = Type.Object({
  backend: Type.String(),
  version: Type.String(),
  state: Type.Union([Type.Literal('active'), Type.Literal('retired')]),
  forced: Type.Boolean(),
});

export const failoverResultSchema = Type.Object({ ...failoverSchema.properties, keyId: Type.String() });

export const backendParams = Type.Object({ name: backendName }, strict);
export const versionParams = Type.Object({ name: backendName, version: versionName }, strict);
export const retireQuery = Type.Object({ force: Type.Optional(Type.Boolean({ default: false })) }, strict);
export const emptyQuery = Type.Object({}, strict);

const judgement = Type.Object({
  backend: Type.String(),
  version: Type.String(),
  stage: Type.Union(
    ['write', 'retired', 're-seeding', 'awaiting-scan', 'needed', 'unclear', 'retirable'].map(stage =>
      Type.Literal(stage),
    ),
  ),
  writeEndedAt: Type.Optional(Type.String()),
  scanNeededAfter: Type.Optional(Type.String()),
  neededBy: Type.Optional(
    Type.Object({ objects: Type.Integer(), resources: Type.Record(Type.String(), Type.Integer()) }),
  ),
});

export const scanRecordedSchema = Type.Object({
  scannedAt: Type.String(),
  revision: Type.String(),
  objects: Type.Integer(),
});

export const usageSchema = Type.Object({
  lastScan: Type.Union([usageScanSchema, Type.Null()]),
  versions: Type.Array(judgement),
});

export const rotationSchema = Type.Object({
  keyId: Type.String(),
  stage: Type.Union(
    ['steady', 're-seeding', 'awaiting-scan', 'needed', 'unclear', 'retirable'].map(stage =>
      Type.Literal(stage),
    ),
  ),
  versions: Type.Array(judgement),
  lastScan: Type.Optional(scanRecordedSchema),
});

const unwrapKeySchema = Type.Object({ backend: Type.String(), version: Type.String() });

export const clusterSchema = Type.Object({
  name: Type.String(),
  prefix: Type.String(),
  /** This broker's node name. */
  node: Type.String(),
  etcd: Type.Object({ reachable: Type.Boolean(), lastContactAt: Type.Optional(Type.String()) }),
  /** The committed key_id: what every broker should advertise. */
  keyId: Type.Optional(Type.String()),
  members: Type.Array(
    Type.Object({
      node: Type.String(),
      version: Type.String(),
      keyId: Type.String(),
      unwrappable: Type.Array(unwrapKeySchema),
      lastSeenAt: Type.String(),
      self: Type.Boolean(),
    }),
  ),
  converged: Type.Boolean(),
  disagreeingSince: Type.Optional(Type.String()),
  proposal: Type.Optional(
    Type.Object({
      node: Type.String(),
      keyId: Type.String(),
      proposedAt: Type.String(),
      confirmedBy: Type.Array(Type.String()),
    }),
  ),
});
