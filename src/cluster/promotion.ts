// Two-phase promotion of a new key_id across the brokers of a control plane. The proposer
// puts the new state beside the committed one (under its own lease, so a proposer that dies
// takes its proposal with it); every other live member proves it can unwrap with the new
// write keys and acknowledges; once every member registered at that moment has, the state is
// committed in one transaction compared on both revisions. Until then the committed state,
// and so every broker's Status, stays as it was. A member that cannot unwrap refuses, and the
// change is given up; a member that stays silent is waited for until its lease lapses.
import { randomBytes } from 'node:crypto';
import type { BrokerState } from '../broker/state/state-schema.ts';
import { BrokerError } from '../errors.ts';
import type { StoreClient } from '../etcd/store-client.ts';
import {
  encodeRecord,
  parseAck,
  parseMember,
  parseProposal,
  stateRecord,
  type Ack,
  type ClusterKeys,
  type Proposal,
  type StateRecord,
} from './records.ts';

export interface PromotionRequest {
  readonly client: StoreClient;
  readonly keys: ClusterKeys;
  readonly node: string;
  readonly lease: string;
  /** The committed state's revision this change is based on ('0': none yet). */
  readonly baseRevision: string;
  readonly state: BrokerState;
  readonly keyId: string;
  readonly previousKeyId: string | undefined;
  readonly timeoutMs: number;
  readonly now: () => Date;
  /** Told the proposal's id once it is out, so that the store can show it. */
  readonly onProposed?: (proposal: Proposal) => void;
}

/** How often the proposer reads the members and their answers while it waits. */
const POLL_MS = 100;

/** Proposes, waits for every member, commits. Resolves with the committed record's revision. */
export async function promote(request: PromotionRequest): Promise<{ revision: string; record: StateRecord }> {
  const { client, keys, node, state, keyId } = request;
  const proposal: Proposal = {
    id: randomBytes(12).toString('base64url'),
    node,
    keyId,
    ...(request.previousKeyId === undefined ? {} : { previousKeyId: request.previousKeyId }),
    proposedAt: request.now().toISOString(),
    state,
  };
  const put = await client.txn(
    [
      { key: keys.state, modRevision: request.baseRevision },
      { key: keys.proposal, modRevision: '0' },
    ],
    [{ put: { key: keys.proposal, value: encodeRecord(proposal), lease: request.lease } }],
  );
  if (!put.succeeded) throw await conflict(client, keys);
  request.onProposed?.(proposal);
  const proposalRevision = put.revision;
  const withdraw = () =>
    client
      .txn(
        [{ key: keys.proposal, modRevision: proposalRevision }],
        [{ delete: { key: keys.proposal } }, { delete: { key: keys.acks(proposal.id), prefix: true } }],
      )
      .catch(() => undefined);

  const deadline = Date.now() + request.timeoutMs;
  let waitingFor: string[] = [];
  for (let round = 0; round <= Math.ceil(request.timeoutMs / POLL_MS) && Date.now() < deadline; round++) {
    const answers = await readAnswers(client, keys, proposal.id, node);
    const refusal = answers.acks.find(ack => !ack.ok);
    if (refusal !== undefined) {
      await withdraw();
      throw new BrokerError(
        'PROMOTION_REFUSED',
        `broker ${refusal.node} cannot unwrap with the new key set (key_id ${keyId}): ${refusal.reason ?? 'no reason given'}; nothing was changed`,
      );
    }
    const confirmed = new Set(answers.acks.map(ack => ack.node));
    waitingFor = answers.members.filter(member => !confirmed.has(member));
    if (waitingFor.length === 0) {
      const record = stateRecord(state, keyId, node, request.now());
      const commit = await client.txn(
        [
          { key: keys.state, modRevision: request.baseRevision },
          { key: keys.proposal, modRevision: proposalRevision },
        ],
        [
          { put: { key: keys.state, value: encodeRecord(record) } },
          { delete: { key: keys.proposal } },
          { delete: { key: keys.acks(proposal.id), prefix: true } },
        ],
      );
      if (!commit.succeeded) throw await conflict(client, keys);
      return { revision: commit.revision, record };
    }
    await new Promise(resolve => setTimeout(resolve, POLL_MS));
  }
  await withdraw();
  throw new BrokerError(
    'PROMOTION_TIMEOUT',
    `not every broker confirmed the new key set (key_id ${keyId}) within ${request.timeoutMs} ms: waiting for ${waitingFor.join(', ') || 'none'}; nothing was changed`,
  );
}

/** The other members registered now, and the answers given to `proposalId`. */
async function readAnswers(
  client: StoreClient,
  keys: ClusterKeys,
  proposalId: string,
  self: string,
): Promise<{ members: string[]; acks: Ack[] }> {
  const [members, acks] = await Promise.all([
    client.range(keys.members, { prefix: true }),
    client.range(keys.acks(proposalId), { prefix: true }),
  ]);
  return {
    members: members.kvs.map(kv => parseMember(kv.value, kv.key).node).filter(member => member !== self),
    acks: acks.kvs.map(kv => parseAck(kv.value, kv.key)),
  };
}

/** Why a compare failed: a peer's proposal in flight, or a state newer than this broker's. */
export async function conflict(client: StoreClient, keys: ClusterKeys): Promise<BrokerError> {
  const pending = await client.range(keys.proposal, { prefix: false }).catch(() => undefined);
  const holder = pending?.kvs[0];
  if (holder !== undefined) {
    let by = 'another broker';
    try {
      by = `broker ${parseProposal(holder.value, holder.key).node}`;
    } catch {
      // A damaged proposal still blocks; it is named by its key instead.
    }
    return new BrokerError(
      'STATE_CONFLICT',
      `${by} is promoting a new key set right now (${keys.proposal}); nothing was changed: repeat the change once it is done`,
    );
  }
  return new BrokerError(
    'STATE_CONFLICT',
    `another broker changed the shared state (${keys.state}) since this one read it; nothing was changed: this broker reloads it now, repeat the change if it is still wanted`,
  );
}

/** A member's answer to a proposal, put under its own lease. */
export async function answer(
  client: StoreClient,
  keys: ClusterKeys,
  proposalId: string,
  ack: Ack,
  lease: string,
): Promise<void> {
  await client.put(keys.ack(proposalId, ack.node), encodeRecord(ack), { lease });
}
