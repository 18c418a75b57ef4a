// A loopback HTTP proxy in front of moto that answers chosen AWS KMS requests itself, the way
// AWS does when it throttles (400 with `__type: ThrottlingException`), fails (500, 503) or
// denies a permission (400 AccessDeniedException, which moto answers as IAM XML instead), and
// forwards everything else unchanged. Faults apply per operation (X-Amz-Target).
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type AwsFault = 'throttle' | 'denied' | 500 | 503;

export interface AwsFaultProxy {
  readonly endpoint: string;
  /** Fails the next `count` requests of `operation` (e.g. "Encrypt"; Infinity: until cleared). */
  inject(operation: string, fault: AwsFault, count?: number): void;
  clear(): void;
  /** Requests answered by a fault, by operation. */
  readonly injected: Readonly<Record<string, number>>;
  /** Requests forwarded to moto, by operation. */
  readonly forwarded: Readonly<Record<string, number>>;
  close(): Promise<void>;
}

/** AWS's answer for each fault: HTTP status and `__type`. */
const answers: Record<AwsFault, [status: number, type: string]> = {
  throttle: [400, 'ThrottlingException'],
  denied: [400, 'AccessDeniedException'],
  500: [500, 'InternalFailure'],
  503: [503, 'ServiceUnavailable'],
};

export async function startAwsFaultProxy(target: string): Promise<AwsFaultProxy> {
  const upstream = new URL(target);
  const faults = new Map<string, { fault: AwsFault; left: number }>();
  const injected: Record<string, number> = {};
  const forwarded: Record<string, number> = {};

  const answer = (res: ServerResponse, fault: AwsFault) => {
    const [status, type] = answers[fault];
    const body = JSON.stringify({ __type: type, message: 'injected by the test proxy' });
    res.writeHead(status, {
      'content-type': 'application/x-amz-json-1.1',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  };

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const upstreamRequest = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      upstreamResponse => {
        res.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
        upstreamResponse.pipe(res);
      },
    );
    upstreamRequest.on('error', () => res.destroy());
    req.pipe(upstreamRequest);
  };

  const server = createServer((req, res) => {
    const operation = String(req.headers['x-amz-target'] ?? '').replace(/^TrentService\./, '');
    const fault = faults.get(operation);
    if (fault !== undefined && fault.left > 0) {
      fault.left--;
      injected[operation] = (injected[operation] ?? 0) + 1;
      // Read the request fully first, as a real server would, so the client sees an answer.
      req.resume();
      req.once('end', () => answer(res, fault.fault));
      return;
    }
    forwarded[operation] = (forwarded[operation] ?? 0) + 1;
    forward(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    inject(operation, fault, count = Infinity) {
      faults.set(operation, { fault, left: count });
    },
    clear() {
      faults.clear();
    },
    get injected() {
      return { ...injected };
    },
    get forwarded() {
      return { ...forwarded };
    },
    close: () =>
      new Promise<void>(resolve => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
