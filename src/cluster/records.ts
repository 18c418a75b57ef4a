// What the brokers of one control plane keep under their etcd prefix, and the one parser each
// record is read with. Nothing here is secret: key versions, fingerprints, key_ids, node names.
//   <prefix>state              the committed state: what every broker advertises
//   <prefix>proposal           a new key_id waiting for every member's confirmation
//   <prefix>acks/<id>/<node>   a member's answer to proposal <id>
//   <prefix>members/<node>     a live broker (under its lease): what it advertises and unwraps
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import { describeSchemaErrors } from '../config/schema-errors.ts';
import { BrokerError } from '../errors.ts';
import { parseState, type BrokerState } from '../broker/state/state-schema.ts';

export interface ClusterKeys {
  readonly prefix: string;
  readonly state: string;
  readonly proposal: string;
  readonly members: string;
  member(node: string): string;
  acks(proposalId: string): string;
  ack(proposalId: string, node: string): string;
}

export function clusterKeys(prefix: string): ClusterKeys {
  return {
    prefix,
    state: `${prefix}state`,
    proposal: `${prefix}proposal`,
    members: `${prefix}members/`,
    member: node => `${prefix}members/${node}`,
    acks: id => `${prefix}acks/${id}/`,
    ack: (id, node) => `${prefix}acks/${id}/${node}`,
  };
}

const unwrapKeySchema = Type.Object(
  { backend: Type.String({ minLength: 1 }), version: Type.String({ minLength: 1 }) },
  { additionalProperties: false },
);

const stateRecordSchema = Type.Object(
  {
    format: Type.Literal(1),
    keyId: Type.String({ minLength: 1 }),
    node: Type.String({ minLength: 1 }),
    committedAt: Type.String({ minLength: 1 }),
    state: Type.Unknown(),
  },
  { additionalProperties: false },
);

const proposalSchema = Type.Object(
  {
    id: Type.String({ pattern: '^[A-Za-z0-9_-]{8,64}$' }),
    node: Type.String({ minLength: 1 }),
    keyId: Type.String({ minLength: 1 }),
    previousKeyId: Type.Optional(Type.String({ minLength: 1 })),
    proposedAt: Type.String({ minLength: 1 }),
    state: Type.Unknown(),
  },
  { additionalProperties: false },
);

const ackSchema = Type.Object(
  {
    node: Type.String({ minLength: 1 }),
    ok: Type.Boolean(),
    /** Why the member cannot unwrap with the proposed keys, when it cannot. */
    reason: Type.Optional(Type.String({ maxLength: 2048 })),
  },
  { additionalProperties: false },
);

const memberSchema = Type.Object(
  {
    node: Type.String({ minLength: 1 }),
    version: Type.String(),
    keyId: Type.String(),
    unwrappable: Type.Array(unwrapKeySchema, { maxItems: 4096 }),
    startedAt: Type.String({ minLength: 1 }),
    seenAt: Type.String({ minLength: 1 }),
  },
  { additionalProperties: false },
);

export interface StateRecord extends Omit<Static<typeof stateRecordSchema>, 'state'> {
  readonly state: BrokerState;
}
export interface Proposal extends Omit<Static<typeof proposalSchema>, 'state'> {
  readonly state: BrokerState;
}
export type Ack = Static<typeof ackSchema>;
export type MemberRecord = Static<typeof memberSchema>;

export function parseStateRecord(value: Buffer, key: string): StateRecord {
  const record = parseRecord(stateRecordSchema, value, key);
  return { ...record, state: parseState(JSON.stringify(record.state), key) };
}

export function parseProposal(value: Buffer, key: string): Proposal {
  const record = parseRecord(proposalSchema, value, key);
  return { ...record, state: parseState(JSON.stringify(record.state), key) };
}

export const parseAck = (value: Buffer, key: string): Ack => parseRecord(ackSchema, value, key);
export const parseMember = (value: Buffer, key: string): MemberRecord =>
  parseRecord(memberSchema, value, key);

/** The committed state as every broker reads it: what it advertises, who committed it, when. */
export function stateRecord(state: BrokerState, keyId: string, node: string, at: Date): StateRecord {
  return { format: 1, keyId, node, committedAt: at.toISOString(), state };
}

export function encodeRecord(record: object): Buffer {
  return Buffer.from(JSON.stringify(record), 'utf8');
}

const ajv = new Ajv({ strict: true });
const validators = new Map<TSchema, ReturnType<typeof ajv.compile>>();

function parseRecord<T extends TSchema>(schema: T, value: Buffer, key: string): Static<T> {
  let validate = validators.get(schema);
  if (validate === undefined) {
    validate = ajv.compile(schema);
    validators.set(schema, validate);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch {
    throw new BrokerError('STATE_CORRUPT', `etcd key ${key} is not valid JSON; restore it or delete it`);
  }
  if (!validate(parsed))
    throw new BrokerError(
      'STATE_CORRUPT',
      `etcd key ${key} is invalid: ${describeSchemaErrors(validate.errors)}; restore it or delete it`,
    );
  return parsed;
}
