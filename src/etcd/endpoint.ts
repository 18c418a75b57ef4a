// One etcd client URL, checked once: scheme (https, or http for an etcd without TLS), host,
// and the gRPC target it dials.
import { BrokerError } from '../errors.ts';
import type { EtcdSettingNames } from './names.ts';

export interface Endpoint {
  readonly url: string;
  /** host:port, as grpc-js dials it. */
  readonly target: string;
  readonly tls: boolean;
}

export function parseEndpoint(url: string, names: EtcdSettingNames): Endpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BrokerError(
      'INVALID_REQUEST',
      `${names.endpoints}: '${url}' is not a URL; write https://host:2379`,
    );
  }
  if ((parsed.protocol !== 'https:' && parsed.protocol !== 'http:') || parsed.host === '')
    throw new BrokerError(
      'INVALID_REQUEST',
      `${names.endpoints}: '${url}' must be https://host:port (or http:// for an etcd without TLS)`,
    );
  const port = parsed.port === '' ? '2379' : parsed.port;
  return { url, target: `${parsed.hostname}:${port}`, tls: parsed.protocol === 'https:' };
}
