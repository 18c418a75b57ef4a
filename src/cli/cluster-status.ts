// `kms-broker status --cluster`: the brokers that share this one's state, the key_id each
// advertises against the committed one, what each can unwrap, and when each was last seen.
// Exit 0 when every broker agrees and etcd answers, 5 otherwise: the cluster serves, and a
// monitoring script can page on the disagreement without parsing text.
import type { ClusterView } from '../broker/ports.ts';
import { resolveTarget } from './admin-client.ts';
import { call, type OutputOptions } from './admin-commands.ts';
import { table } from './table.ts';

const EXIT_DISAGREE = 5;

export async function clusterStatusCommand(options: OutputOptions): Promise<number> {
  const { body } = await call(resolveTarget(options, 'viewer'), 'GET', '/v1/cluster');
  const view = body as ClusterView;
  if (options.json === true) process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
  else process.stdout.write(human(view));
  return view.converged && view.etcd.reachable ? 0 : EXIT_DISAGREE;
}

function human(view: ClusterView): string {
  const summary = [
    `cluster ${view.name} (${view.prefix}), seen from ${view.node}`,
    `committed key_id: ${view.keyId ?? '-'}`,
    `etcd: ${view.etcd.reachable ? 'reachable' : `UNREACHABLE (last answer ${view.etcd.lastContactAt ?? 'never'}): admin changes are refused`}`,
    view.converged
      ? 'converged: every broker advertises the committed key_id'
      : `NOT converged${view.disagreeingSince === undefined ? '' : ` since ${view.disagreeingSince}`}`,
    ...(view.proposal === undefined
      ? []
      : [
          `promoting ${view.proposal.keyId} (proposed by ${view.proposal.node} at ${view.proposal.proposedAt}; confirmed by ${view.proposal.confirmedBy.join(', ') || 'none yet'})`,
        ]),
  ];
  const rows = view.members.map(member => [
    member.self ? `${member.node} (this)` : member.node,
    member.keyId === view.keyId ? member.keyId : `${member.keyId} (differs)`,
    member.unwrappable.map(key => `${key.backend}=${key.version}`).join(' ') || '-',
    member.lastSeenAt,
    member.version,
  ]);
  return `${summary.join('\n')}\n\n${table(['NODE', 'KEY_ID', 'UNWRAPS', 'LAST SEEN', 'VERSION'], rows)}`;
}
