// The members of one etcd cluster as a client sees them: one gRPC channel per endpoint (every
// service of the client shares it), tried in order from the member that answered last, so a
// client stays on a healthy member and one member down fails no call another member answers.
import * as grpc from '@grpc/grpc-js';
import { BrokerError, isBrokerError } from '../errors.ts';
import { parseEndpoint, type Endpoint } from './endpoint.ts';
import { memberFailure, noMemberAnswered, triesNextMember, type FailureContext } from './member-failure.ts';
import type { EtcdSettingNames } from './names.ts';
import { tlsCredentials, type EtcdTlsFiles } from './tls.ts';

export interface MembersOptions {
  readonly endpoints: readonly string[];
  readonly tls: EtcdTlsFiles | undefined;
  readonly names: EtcdSettingNames;
  readonly channelOptions?: grpc.ChannelOptions;
}

export interface Members {
  readonly size: number;
  /** One client of `service` per member, in endpoint order, each on its member's channel. */
  clients<C extends grpc.Client>(service: grpc.ServiceClientConstructor): C[];
  context(index: number): FailureContext;
  /** Member indexes in the order to try them: the one that answered last first. */
  order(): number[];
  answered(index: number): void;
  close(): void;
}

/** Turns a call's error into what the caller throws; member failures move on to the next member. */
export type Classify = (error: grpc.ServiceError, context: FailureContext) => Error;

export function connectMembers(options: MembersOptions): Members {
  if (options.endpoints.length === 0)
    throw new BrokerError(
      'INVALID_REQUEST',
      `${options.names.endpoints}: no endpoint; write https://host:2379`,
    );
  const endpoints: Endpoint[] = options.endpoints.map(url => parseEndpoint(url, options.names));
  const secure = endpoints.some(endpoint => endpoint.tls)
    ? options.tls === undefined
      ? grpc.credentials.createSsl()
      : tlsCredentials(options.tls, options.names)
    : undefined;
  const channels = endpoints.map(
    endpoint =>
      new grpc.Channel(
        endpoint.target,
        endpoint.tls ? (secure as grpc.ChannelCredentials) : grpc.credentials.createInsecure(),
        options.channelOptions ?? {},
      ),
  );
  let current = 0;
  return {
    size: endpoints.length,
    clients: <C extends grpc.Client>(service: grpc.ServiceClientConstructor) =>
      endpoints.map(
        (endpoint, index) =>
          // The channel carries the credentials; the client's own are never used.
          new service(endpoint.target, grpc.credentials.createInsecure(), {
            channelOverride: channels[index] as grpc.Channel,
          }) as unknown as C,
      ),
    context: index => ({ endpoint: endpoints[index] as Endpoint, files: options.tls, names: options.names }),
    order: () => endpoints.map((_, attempt) => (current + attempt) % endpoints.length),
    answered(index) {
      current = index;
    },
    close() {
      // Closes every client made here too: they share these channels.
      for (const channel of channels) channel.close();
    },
  };
}

/**
 * `attempt` on each member in order until one answers. Safe for writes too: every write the
 * clients make is idempotent or compared on revision, so one that reached a member whose
 * answer was lost and is made again elsewhere at worst reports a failed compare.
 */
export async function firstAnswer<T>(
  members: Members,
  attempt: (index: number) => Promise<T>,
  classify: Classify,
): Promise<T> {
  const failures: BrokerError[] = [];
  for (const index of members.order()) {
    try {
      const answer = await attempt(index);
      members.answered(index);
      return answer;
    } catch (error) {
      const failure = classify(error as grpc.ServiceError, members.context(index));
      if (!isBrokerError(failure) || !triesNextMember(failure)) throw failure;
      failures.push(failure);
    }
  }
  throw noMemberAnswered(failures);
}

/** Member failures as such; anything else as `other` says. */
export function classifyWith(other: (error: grpc.ServiceError, context: FailureContext) => Error): Classify {
  return (error, context) => memberFailure(error, context) ?? other(error, context);
}
