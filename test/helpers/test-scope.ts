// Test scaffolding shared by the fault tests: ordered clean-up, and a server that hangs.
import { createServer, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

const cleanUps = new WeakMap<TestContext, (() => unknown)[]>();

/**
 * Registers a clean-up to run after the test, last registered first: clients close before
 * brokers stop, brokers stop before OpenBao does, and folders go last. Every clean-up runs even
 * if one fails.
 */
export function defer(t: TestContext, cleanUp: () => unknown): void {
  let stack = cleanUps.get(t);
  if (stack === undefined) {
    const created: (() => unknown)[] = [];
    stack = created;
    cleanUps.set(t, created);
    t.after(async () => {
      const errors: unknown[] = [];
      for (const step of created.reverse()) {
        try {
          await step();
        } catch (error) {
          errors.push(error);
        }
      }
      if (errors.length > 0) throw errors[0];
    });
  }
  stack.push(cleanUp);
}

/** A TCP listener on OpenBao's port that accepts connections and never answers them. */
export async function listenSilently(
  port: number,
): Promise<{ connections: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer(socket => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
  });
  return {
    connections: () => accepted,
    close: () =>
      new Promise<void>(resolve => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
