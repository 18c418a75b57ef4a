// The gRPC server on the unix socket: bind with restrictive permissions, serve the KMS
// services, and on shutdown stop accepting, let in-flight calls finish within a bound,
// then remove the socket (only if it is still ours).
import { chmod, stat, unlink } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.ts';
import { MAX_REQUEST_MESSAGE_BYTES } from './limits.ts';
import { listenFailure, prepareSocketPath } from '../socket-path.ts';

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
  readonly #socketPath: string;
  readonly #socketInode: number;
  readonly #logger: Logger;

  private constructor(server: grpc.Server, socketPath: string, socketInode: number, logger: Logger) {
    this.#server = server;
    this.#socketPath = socketPath;
    this.#socketInode = socketInode;
    this.#logger = logger;
  }

  static async listen(options: KmsServerOptions): Promise<KmsServer> {
    await prepareSocketPath(options.socketPath, 'socket');
    const server = new grpc.Server({
      'grpc.max_receive_message_length': MAX_REQUEST_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_REQUEST_MESSAGE_BYTES,
    });
    for (const service of options.services) server.addService(service.definition, service.handlers);
    // The socket is created by bind with the process umask; a tight umask closes the
    // window in which it would be reachable with looser permissions than configured.
    const previousUmask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) =>
        server.bindAsync(`unix://${options.socketPath}`, grpc.ServerCredentials.createInsecure(), error =>
          error ? reject(error) : resolve(),
        ),
      ).catch((error: unknown) => {
        // grpc-js keeps the errno only in its message ("[listen EACCES: permission denied …]").
        const errno = /\blisten (E[A-Z]+)\b/.exec(String((error as Error).message))?.[1];
        throw listenFailure('socket', options.socketPath, errno);
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
    return new KmsServer(server, options.socketPath, ino, options.logger);
  }

  /** Stops accepting calls, waits up to graceMs for in-flight ones, then cancels the rest. */
  async shutdown(graceMs: number): Promise<void> {
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
    const current = await stat(this.#socketPath).catch(() => undefined);
    if (current?.ino === this.#socketInode) await unlink(this.#socketPath).catch(() => undefined);
  }
}
