// An HTTP/2 connection opens with a fixed 24-byte client preface (RFC 9113 §3.4). The KMS
// listener waits for it, within a bound, before it hands the connection to grpc-js: grpc-js
// (through node:http2) holds a connection that never completes its preface for ever. Its
// idle timer (grpc.max_connection_idle_ms) sends GOAWAY and then waits for a peer that never
// answers, and it turns off node's socket timeout (http2Server.setTimeout(0)).
import type { Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Resolves true once the preface has arrived, leaving it unread for the HTTP/2 session
 * (node:http2 reads what a socket already buffered); false when the first 24 bytes are
 * anything else, on close, or when they have not arrived within timeoutMs.
 */
export function awaitPreface(socket: Socket, timeoutMs: number): Promise<boolean> {
  return new Promise(resolve => {
    const settle = (spoke: boolean) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      resolve(spoke);
    };
    const onReadable = () => {
      // A peer that stops short is left to the timeout (or to its close).
      const head = socket.read(PREFACE.length) as Buffer | null;
      if (head === null) return;
      socket.unshift(head);
      settle(head.equals(PREFACE));
    };
    const onClose = () => settle(false);
    const timer = setTimeout(() => settle(false), timeoutMs);
    socket.on('readable', onReadable);
    socket.once('close', onClose);
  });
}
