// `kms-broker status --cluster`: the brokers that share this one's state, the key_id each
// advertises against the committed one, what each can unwrap, and when each was last seen.
// Exit 0 when every broker agrees and etcd answers, 5 otherwise: the cluster serves, and a
// monitoring script can page on the disagreement without parsing text.
import type { ClusterView } from '../broker/ports.ts';
import { resolveTarget } from './admin-client.ts';
import { call, type OutputOptions } from './admin-commands.ts';
import { age, documentOf, formatOf } from './output.ts';
import { table } from './table.ts';
import type { ViewContext } from './views.ts';

const EXIT_DISAGREE = 5;

export async function clusterStatusCommand(options: OutputOptions): Promise<number> {
  const { body } = await call(await resolveTarget(options, 'viewer'), 'GET', '/v1/cluster');
  const view = body as ClusterView;
  const format = formatOf(options);
  process.stdout.write(
    format === 'json' || format === 'yaml'
      ? await documentOf(format, view)
      : clusterText(view, { wide: format === 'wide', now: Date.now() }),
  );
  return view.converged && view.etcd.reachable ? 0 : EXIT_DISAGREE;
}

/** A key_id is 48 characters; 16 tell brokers apart in a table that fits 80 columns. */
const SHORT_KEY_ID = 16;

export function clusterText(view: ClusterView, { wide, now }: ViewContext): string {
  const when = (at: string | undefined) => (at === undefined ? 'never' : wide ? at : `${age(at, now)} ago`);
  const summary = [
    `cluster ${view.name} (${view.prefix}), seen from ${view.node}`,
    `committed key_id: ${view.keyId ?? '-'}`,
    `etcd: ${view.etcd.reachable ? 'reachable' : `UNREACHABLE (last answer ${when(view.etcd.lastContactAt)}): admin changes are refused`}`,
    view.converged
      ? 'converged: every broker advertises the committed key_id'
      : `NOT converged${view.disagreeingSince === undefined ? '' : ` since ${when(view.disagreeingSince)}`}`,
    ...(view.proposal === undefined
      ? []
      : [
          `promoting ${view.proposal.keyId}`,
          `  proposed by ${view.proposal.node} ${when(view.proposal.proposedAt)}`,
          `  confirmed by ${view.proposal.confirmedBy.join(', ') || 'none yet'}`,
        ]),
  ];
  const keyId = (id: string) => (wide || id.length <= SHORT_KEY_ID ? id : `${id.slice(0, SHORT_KEY_ID)}…`);
  const rows = view.members.map(member => [
    member.self ? `${member.node} (this)` : member.node,
    keyId(member.keyId),
    member.keyId === view.keyId ? 'yes' : 'NO',
    member.unwrappable.map(key => `${key.backend}=${key.version}`).join(' ') || '-',
    wide ? member.lastSeenAt : age(member.lastSeenAt, now),
    ...(wide ? [member.version] : []),
  ]);
  const headers = [
    'NODE',
    'KEY_ID',
    'AGREES',
    'UNWRAPS',
    wide ? 'LAST SEEN' : 'SEEN',
    ...(wide ? ['VERSION'] : []),
  ];
  return `${summary.join('\n')}\n\n${table(headers, rows)}`;
}
