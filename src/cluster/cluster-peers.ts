// What this broker knows of its peers from the watch on the shared prefix: who is registered
// and what each advertises, the proposal in flight and who confirmed it, whether etcd answers.
// It answers the peers' proposals (a round trip with each proposed write key, by the broker),
// tells whether every member advertises the committed key_id, and warns when they have not
// for longer than the configured bound.
import type { ClusterView, LocalBroker } from '../broker/state/state-store.ts';
import { toBrokerError } from '../errors.ts';
import type { StoredKv, WatchEvent } from '../etcd/store-client.ts';
import type { Logger } from '../log.ts';
import {
  parseAck,
  parseMember,
  parseProposal,
  type Ack,
  type ClusterKeys,
  type MemberRecord,
  type Proposal,
} from './records.ts';

export interface ClusterPeersOptions {
  readonly name: string;
  readonly node: string;
  readonly keys: ClusterKeys;
  readonly convergenceWarnMs: number;
  readonly logger: Logger;
  readonly now: () => Date;
}

type SendAck = (proposalId: string, ack: Ack) => Promise<void>;

/** Proposal ids remembered as answered; older ones are long committed or withdrawn. */
const ANSWERED_KEPT = 32;

export class ClusterPeers {
  readonly #options: ClusterPeersOptions;
  readonly #members = new Map<string, MemberRecord>();
  #proposal: { readonly proposal: Proposal; readonly confirmedBy: Set<string> } | undefined;
  readonly #answered = new Set<string>();
  #local: LocalBroker | undefined;
  #send: SendAck | undefined;
  #reachable = false;
  #lastContactAt: Date | undefined;
  #committedKeyId: string | undefined;
  #revision = 0n;
  #disagreeingSince: Date | undefined;
  #warned = false;
  readonly #timer: NodeJS.Timeout;

  constructor(options: ClusterPeersOptions) {
    this.#options = options;
    const period = Math.min(5000, Math.max(500, Math.floor(options.convergenceWarnMs / 2)));
    this.#timer = setInterval(() => this.#checkConvergence(), period).unref();
  }

  attach(local: LocalBroker, send: SendAck): void {
    this.#local = local;
    this.#send = send;
    if (this.#proposal !== undefined) this.#answer(this.#proposal.proposal);
  }

  contact(reachable: boolean): void {
    if (reachable) this.#lastContactAt = this.#options.now();
    if (reachable !== this.#reachable)
      this.#options.logger[reachable ? 'info' : 'warn'](
        { prefix: this.#options.keys.prefix },
        reachable
          ? 'etcd answers again: admin changes are accepted'
          : 'etcd does not answer: admin changes are refused',
      );
    this.#reachable = reachable;
  }

  get reachable(): boolean {
    return this.#reachable;
  }

  seenRevision(revision: string): void {
    if (BigInt(revision) > this.#revision) this.#revision = BigInt(revision);
  }

  /** Where a watch starts: after the newest revision read, or at the newest ('0') when none was. */
  nextRevision(): string {
    return this.#revision === 0n ? '0' : String(this.#revision + 1n);
  }

  committedKeyId(keyId: string): void {
    this.#committedKeyId = keyId;
    this.#checkConvergence();
  }

  /** This broker's own proposal (or none any more). */
  proposing(proposal: Proposal | undefined): void {
    this.#proposal = proposal === undefined ? undefined : { proposal, confirmedBy: new Set() };
  }

  apply(event: WatchEvent): void {
    this.seenRevision(event.kv.modRevision);
    this.#take(event.kv, event.type === 'delete');
    this.#checkConvergence();
  }

  /** Everything under the prefix, read anew. */
  replaceAll(kvs: readonly StoredKv[]): void {
    this.#members.clear();
    this.#forgetPeerProposal();
    for (const kv of kvs) if (kv.key !== this.#options.keys.proposal) this.#take(kv, false);
    const proposal = kvs.find(kv => kv.key === this.#options.keys.proposal);
    if (proposal !== undefined) this.#take(proposal, false);
    this.#checkConvergence();
  }

  view(): ClusterView {
    const { name, node, keys } = this.#options;
    const members = [...this.#members.values()]
      .sort((a, b) => a.node.localeCompare(b.node))
      .map(member => ({
        node: member.node,
        version: member.version,
        keyId: member.keyId,
        unwrappable: member.unwrappable,
        lastSeenAt: member.seenAt,
        self: member.node === node,
      }));
    const pending = this.#proposal;
    return {
      name,
      prefix: keys.prefix,
      node,
      etcd: {
        reachable: this.#reachable,
        ...(this.#lastContactAt === undefined ? {} : { lastContactAt: this.#lastContactAt.toISOString() }),
      },
      ...(this.#committedKeyId === undefined ? {} : { keyId: this.#committedKeyId }),
      members,
      converged: this.#converged(),
      ...(this.#disagreeingSince === undefined
        ? {}
        : { disagreeingSince: this.#disagreeingSince.toISOString() }),
      ...(pending === undefined
        ? {}
        : {
            proposal: {
              node: pending.proposal.node,
              keyId: pending.proposal.keyId,
              proposedAt: pending.proposal.proposedAt,
              confirmedBy: [...pending.confirmedBy].sort(),
            },
          }),
    };
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #take(kv: StoredKv, deleted: boolean): void {
    const { keys, logger } = this.#options;
    try {
      if (kv.key.startsWith(keys.members)) {
        const node = kv.key.slice(keys.members.length);
        if (deleted) this.#members.delete(node);
        else this.#members.set(node, parseMember(kv.value, kv.key));
      } else if (kv.key === keys.proposal) {
        if (deleted) {
          this.#forgetPeerProposal();
          return;
        }
        const proposal = parseProposal(kv.value, kv.key);
        if (proposal.node === this.#options.node) return;
        this.#proposal = { proposal, confirmedBy: new Set() };
        this.#answer(proposal);
      } else if (kv.key.startsWith(`${keys.prefix}acks/`) && !deleted) {
        const ack = parseAck(kv.value, kv.key);
        if (ack.ok && kv.key.startsWith(keys.acks(this.#proposal?.proposal.id ?? '')))
          this.#proposal?.confirmedBy.add(ack.node);
      }
    } catch (error) {
      logger.warn(
        { key: kv.key, code: toBrokerError(error).code },
        'ignoring an invalid record under the shared prefix',
      );
    }
  }

  /** Drops a peer's proposal; this broker's own is shown until its promotion ends (`proposing`). */
  #forgetPeerProposal(): void {
    if (this.#proposal?.proposal.node !== this.#options.node) this.#proposal = undefined;
  }

  /** Confirms (or refuses) a peer's proposal once; an answer that could not be sent is tried again on the next re-read. */
  #answer(proposal: Proposal): void {
    const local = this.#local;
    const send = this.#send;
    if (local === undefined || send === undefined || this.#answered.has(proposal.id)) return;
    this.#answered.add(proposal.id);
    if (this.#answered.size > ANSWERED_KEPT)
      this.#answered.delete(this.#answered.values().next().value as string);
    const { node, logger } = this.#options;
    void local
      .confirm(proposal.state)
      .then(
        () => ({ node, ok: true }),
        (error: unknown) => ({ node, ok: false, reason: toBrokerError(error).message }),
      )
      .then(async (ack: Ack) => {
        logger.info(
          { proposer: proposal.node, keyId: proposal.keyId, confirmed: ack.ok },
          'answered a key set proposal',
        );
        await send(proposal.id, ack);
      })
      .catch((error: unknown) => {
        this.#answered.delete(proposal.id);
        logger.warn(
          { code: toBrokerError(error).code },
          'could not answer a key set proposal; retrying on the next re-read',
        );
      });
  }

  #converged(): boolean {
    const keyId = this.#committedKeyId;
    return keyId !== undefined && [...this.#members.values()].every(member => member.keyId === keyId);
  }

  #checkConvergence(): void {
    if (this.#converged()) {
      this.#disagreeingSince = undefined;
      this.#warned = false;
      return;
    }
    const now = this.#options.now();
    this.#disagreeingSince ??= now;
    if (!this.#warned && now.getTime() - this.#disagreeingSince.getTime() > this.#options.convergenceWarnMs) {
      this.#warned = true;
      this.#options.logger.warn(
        {
          keyId: this.#committedKeyId,
          members: [...this.#members.values()].map(member => ({ node: member.node, keyId: member.keyId })),
          sinceMs: now.getTime() - this.#disagreeingSince.getTime(),
        },
        'brokers of the cluster advertise different key_ids for longer than cluster.convergenceWarnMs; if it lasts, check that every node has the same backends and failover setting in its config',
      );
    }
  }
}
