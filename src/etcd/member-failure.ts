// The failures that say "this member cannot be used now" (not reachable, TLS refused, no
// leader) as opposed to an answer to the request itself. They are the ones a client moves on
// to the next member for; each becomes one message that names the endpoint, the setting and
// the fix. etcd's own error text is never copied into a message, only recognised.
import * as grpc from '@grpc/grpc-js';
import { BrokerError } from '../errors.ts';
import type { Endpoint } from './endpoint.ts';
import { advise, type EtcdSettingNames } from './names.ts';
import type { EtcdTlsFiles } from './tls.ts';

/** What a failure is judged against: the member it came from and the client's settings. */
export interface FailureContext {
  readonly endpoint: Endpoint;
  /** Undefined when every endpoint is plain http. */
  readonly files: EtcdTlsFiles | undefined;
  readonly names: EtcdSettingNames;
}

/** A failure of the member rather than of the request, or undefined for any other error. */
export function memberFailure(error: grpc.ServiceError, context: FailureContext): BrokerError | undefined {
  const { endpoint, files, names } = context;
  switch (error.code) {
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `etcd at ${endpoint.url} refused the client certificate ${files?.certFile ?? '(none)'} (${grpc.status[error.code]}); use a certificate etcd grants ${names.access}, e.g. kubeadm's /etc/kubernetes/pki/apiserver-etcd-client.crt`,
      );
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return connectionFailure(error.code, typeof error.details === 'string' ? error.details : '', context);
  }
  return undefined;
}

/** Whether the next member may be tried after this failure. */
export function triesNextMember(failure: BrokerError): boolean {
  return failure.code === 'ETCD_UNREACHABLE' || failure.code === 'ETCD_AUTH_FAILED';
}

/** The failures of every member as one error: a TLS refusal first, it needs a fix, not a wait. */
export function noMemberAnswered(failures: readonly BrokerError[]): BrokerError {
  const auth = failures.find(failure => failure.code === 'ETCD_AUTH_FAILED');
  if (auth !== undefined) return auth;
  if (failures.length === 1) return failures[0] as BrokerError;
  return new BrokerError('ETCD_UNREACHABLE', failures.map(failure => failure.message).join('; '));
}

function connectionFailure(code: grpc.status, details: string, context: FailureContext): BrokerError {
  const { endpoint, files, names } = context;
  const where = `etcd at ${endpoint.url}`;
  if (endpoint.tls) {
    if (
      /self[- ]signed|unable to (get|verify)|verify failed|unknown ca/i.test(details) &&
      !/alert/i.test(details)
    )
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} presented a certificate that ${files?.caFile ?? 'the CA'} did not sign; ${advise(names.caFile, "etcd's CA")} (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)`,
      );
    if (/altname|does not match|hostname/i.test(details))
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} presented a certificate that does not name '${endpoint.target.replace(/:\d+$/, '')}'; use an address its certificate lists (kubeadm: 127.0.0.1 or the node's IP)`,
      );
    if (/alert|certificate required|bad certificate|handshake/i.test(details))
      return new BrokerError(
        'ETCD_AUTH_FAILED',
        `${where} refused the client certificate ${files?.certFile ?? '(none)'}; use one signed by etcd's client CA (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.crt with its .key)`,
      );
    if (/wrong version number|packet length|ssl|tls/i.test(details))
      return new BrokerError(
        'ETCD_UNREACHABLE',
        `${where} does not speak TLS (${errnoOf(details) ?? 'TLS handshake failed'}); if etcd serves plain HTTP use http://`,
      );
  }
  const raft = raftReason(details);
  if (raft !== undefined)
    return new BrokerError(
      'ETCD_UNREACHABLE',
      `${where} cannot serve now (${raft}); check the etcd cluster's health (etcdctl endpoint health --cluster)`,
    );
  const cause =
    errnoOf(details) ?? (code === grpc.status.DEADLINE_EXCEEDED ? 'no answer in time' : 'connection failed');
  const fix = names.endpoints.startsWith('-') ? `pass ${names.endpoints}` : `correct ${names.endpoints}`;
  return new BrokerError(
    'ETCD_UNREACHABLE',
    `cannot reach ${where} (${cause}); check that etcd runs and listens there (kubeadm: https://127.0.0.1:2379 on a control-plane node), or ${fix}${endpoint.tls ? '' : ' (https:// if etcd serves TLS)'}`,
  );
}

/** A member that is up but not part of a working cluster (election, lost quorum, overload). */
function raftReason(details: string): string | undefined {
  if (!details.startsWith('etcdserver: ')) return undefined;
  if (/no leader/.test(details)) return 'no leader';
  if (/leader changed/.test(details)) return 'leader changed';
  if (/timed out|timeout/.test(details)) return 'request timed out in raft';
  if (/too many requests/.test(details)) return 'too many requests';
  return 'member not ready';
}

function errnoOf(details: string): string | undefined {
  return /\b(E[A-Z]{3,}[A-Z0-9]*)\b/.exec(details)?.[1];
}
