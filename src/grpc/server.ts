// The gRPC server on the unix socket: bind with restrictive permissions, serve the KMS
// services, and on shutdown stop accepting, let in-flight calls finish within a bound,
// then remove the socket (only if it is still ours).
//
// The broker owns the listening socket and hands each connection to grpc-js (its public
// createConnectionInjector), because grpc-js offers no cap on connections and no bound on
// a connection that never speaks HTTP/2. Owning the listener gives both: a connection cap
// (ConnectionGuard) and a deadline for the HTTP/2 preface. grpc's own idle timeout then
// closes connections that spoke HTTP/2 but carry no calls.
import { chmod, stat, unlink } from 'node:fs/promises';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ConnectionGuard } from '../connection-guard.ts';
import type { Logger } from '../log.ts';
import { awaitPreface } from './http2-preface.ts';
import { MAX_REQUEST_MESSAGE_BYTES } from './limits.ts';
import { listenFailure, prepareSocketPath } from '../socket-path.ts';

/**
 * Connections the KMS socket holds at most. The apiserver keeps one per KMS provider entry
 * (two while migrating from v1); `kms-broker verify` and probes add a few.
 */
export const MAX_KMS_CONNECTIONS = 128;
/** The apiserver sends its preface at once; a connection silent this long is not one. */
export const KMS_PREFACE_TIMEOUT_MS = 5_000;
/**
 * A connection with no call for this long is closed (GOAWAY; the client reconnects when it
 * next calls). Above the apiserver's one-minute Status poll, so its connection is kept.
 */
export const KMS_CONNECTION_IDLE_MS = 300_000;

export interface ServiceBinding {
  readonly definition: grpc.ServiceDefinition;
  readonly handlers: grpc.UntypedServiceImplementation;
}

export interface KmsServerOptions {
  readonly socketPath: string;
  readonly socketMode: number;
  readonly services: readonly ServiceBinding[];
  readonly logger: Logger;
}

export class KmsServer {
  readonly #server: grpc.Server;
  readonly #listener: NetServer;
  readonly #guard: ConnectionGuard;
  readonly #socketPath: string;
  readonly #socketInode: number;
  readonly #logger: Logger;

  private constructor(
    parts: { server: grpc.Server; listener: NetServer; guard: ConnectionGuard },
    socketPath: string,
    socketInode: number,
    logger: Logger,
  ) {
    this.#server = parts.server;
    this.#listener = parts.listener;
    this.#guard = parts.guard;
    this.#socketPath = socketPath;
    this.#socketInode = socketInode;
    this.#logger = logger;
  }

  static async listen(options: KmsServerOptions): Promise<KmsServer> {
    await prepareSocketPath(options.socketPath, 'socket');
    const server = new grpc.Server({
      'grpc.max_receive_message_length': MAX_REQUEST_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_REQUEST_MESSAGE_BYTES,
      'grpc.max_connection_idle_ms': KMS_CONNECTION_IDLE_MS,
    });
    for (const service of options.services) server.addService(service.definition, service.handlers);
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const guard = new ConnectionGuard({
      listener: 'kms',
      limit: MAX_KMS_CONNECTIONS,
      logger: options.logger,
    });
    const listener = createServer((socket: Socket) => {
      // A client's connection errors (a reset) are its own; they must not crash the broker.
      socket.on('error', () => socket.destroy());
      guard.admit(socket);
      void awaitPreface(socket, KMS_PREFACE_TIMEOUT_MS).then(spoke => {
        if (!spoke) {
          socket.destroy();
          return;
        }
        // It speaks HTTP/2: from now on grpc-js owns it, and the cap no longer evicts it.
        guard.active(socket);
        injector.injectConnection(socket);
      });
    });
    // The socket is created by listen with the process umask; a tight umask closes the
    // window in which it would be reachable with looser permissions than configured.
    const previousUmask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        const fail = (error: NodeJS.ErrnoException) =>
          reject(listenFailure('socket', options.socketPath, error.code));
        listener.once('error', fail);
        listener.listen(options.socketPath, () => {
          listener.off('error', fail);
          resolve();
        });
      });
    } finally {
      process.umask(previousUmask);
    }
    await chmod(options.socketPath, options.socketMode);
    const { ino } = await stat(options.socketPath);
    options.logger.info(
      { socket: options.socketPath, mode: options.socketMode.toString(8) },
      'serving KMS on unix socket',
    );
    return new KmsServer({ server, listener, guard }, options.socketPath, ino, options.logger);
  }

  /** Stops accepting calls, waits up to graceMs for in-flight ones, then cancels the rest. */
  async shutdown(graceMs: number): Promise<void> {
    const closed = new Promise<void>(resolve => this.#listener.close(() => resolve()));
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => {
        this.#logger.warn({ graceMs }, 'in-flight calls did not finish in time; cancelling them');
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    // What grpc-js never saw (connections still owing their preface) is closed here.
    this.#guard.closeIdle();
    await closed;
    const current = await stat(this.#socketPath).catch(() => undefined);
    if (current?.ino === this.#socketInode) await unlink(this.#socketPath).catch(() => undefined);
  }
}
