// The admin HTTP listener (fastify): loopback TCP or a 0600 unix socket by default, TLS and
// client certificates when configured. Callers are authenticated before anything else is
// read (access.ts); request bodies are then validated by schema with unknown fields
// rejected (never silently dropped); the OpenAPI document is generated from the same
// schemas. Connections are capped and every phase of a request is timed (limits.ts).
import { chmod } from 'node:fs/promises';
import type { Socket } from 'node:net';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import type { BrokerConfig } from '../config/schema.ts';
import { ConnectionGuard } from '../connection-guard.ts';
import type { FileReader } from '../file-reader.ts';
import { listenFailure, prepareSocketPath } from '../socket-path.ts';
import type { Logger } from '../log.ts';
import { BrokerError } from '../errors.ts';
import { registerAccessHook } from './access.ts';
import { registerConsole } from './console/routes.ts';
import * as limits from './limits.ts';
import { clientErrorHandler, frameworkErrorHandler, problemHandler, sendProblem } from './problem.ts';
import { registerRoutes, type RouteDeps } from './routes.ts';
import { problemSchema } from './schemas.ts';

export type AdminAppDeps = RouteDeps;

/** node:http's own timeouts, for the plain and the TLS server alike. */
const httpTimeouts = {
  headersTimeout: limits.HEADERS_TIMEOUT_MS,
  connectionsCheckingInterval: limits.TIMEOUT_CHECK_INTERVAL_MS,
};

async function buildAdminApp(
  deps: AdminAppDeps & { checkHost: boolean; console: boolean },
  https?: { cert: Buffer; key: Buffer; ca?: Buffer },
): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: limits.MAX_BODY_BYTES,
    maxParamLength: limits.MAX_PARAM_LENGTH,
    connectionTimeout: limits.SOCKET_IDLE_TIMEOUT_MS,
    keepAliveTimeout: limits.KEEP_ALIVE_TIMEOUT_MS,
    requestTimeout: limits.REQUEST_TIMEOUT_MS,
    // While closing, answer as usual (/readyz then says not ready, as problem+json) rather
    // than with fastify's plain-JSON 503.
    return503OnClosing: false,
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler,
    ajv: { customOptions: { removeAdditional: false, allErrors: false } },
    http: httpTimeouts,
    ...(https !== undefined && {
      https: {
        ...httpTimeouts,
        handshakeTimeout: limits.TLS_HANDSHAKE_TIMEOUT_MS,
        cert: https.cert,
        key: https.key,
        ...(https.ca !== undefined && { ca: https.ca, requestCert: true, rejectUnauthorized: true }),
      },
    }),
  });
  app.addSchema(problemSchema);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'kms-broker admin API', version: deps.version },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  app.setErrorHandler(problemHandler);
  registerAccessHook(app, deps);
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      new BrokerError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0] ?? ''}`),
    ),
  );
  registerRoutes(app, deps);
  if (deps.console) registerConsole(app, () => deps.admin.backends());
  app.get('/openapi.json', { schema: { summary: 'This document', security: [] } }, () => app.swagger());
  await app.ready();
  return app;
}

export interface AdminServer {
  /** Where it listens, e.g. `http://127.0.0.1:8787` or `unix:///run/kms-broker/admin.sock`. */
  readonly address: string;
  close(): Promise<void>;
}

export async function startAdminServer(
  config: BrokerConfig['admin'],
  deps: AdminAppDeps,
  logger: Logger,
  readFile: FileReader,
): Promise<AdminServer> {
  const tls =
    config.tls === undefined
      ? undefined
      : {
          cert: readFile(config.tls.certFile),
          key: readFile(config.tls.keyFile),
          ...(config.tls.clientCaFile !== undefined && { ca: readFile(config.tls.clientCaFile) }),
        };
  const isUnix = config.listen.startsWith('unix://');
  // Plain HTTP is allowed only on loopback TCP (the config refuses it elsewhere).
  const app = await buildAdminApp(
    { ...deps, checkHost: !isUnix && tls === undefined, console: config.console.enabled },
    tls,
  );
  const guard = guardConnections(app, tls !== undefined, logger);
  let address: string;
  if (isUnix) {
    const path = config.listen.slice('unix://'.length);
    await prepareSocketPath(path, 'admin.listen');
    const previousUmask = process.umask(0o177);
    try {
      await app.listen({ path }).catch(failedToListen(path));
    } finally {
      process.umask(previousUmask);
    }
    await chmod(path, 0o600);
    address = config.listen;
  } else {
    const separator = config.listen.lastIndexOf(':');
    const host = config.listen.slice(0, separator).replace(/^\[|\]$/g, '');
    const port = Number(config.listen.slice(separator + 1));
    await app.listen({ host, port }).catch(failedToListen(config.listen));
    const bound = app.server.address();
    const boundPort = typeof bound === 'object' && bound !== null ? bound.port : port;
    address = `${tls === undefined ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
  }
  logger.info({ address }, 'admin API listening');
  return {
    address,
    async close() {
      const closing = app.close();
      guard.closeIdle();
      await closing;
    },
  };
}

/** Caps the listener's connections; a connection is active while it carries a request. */
function guardConnections(app: FastifyInstance, isTls: boolean, logger: Logger): ConnectionGuard {
  const guard = new ConnectionGuard({ listener: 'admin', limit: limits.MAX_ADMIN_CONNECTIONS, logger });
  const server = app.server;
  // With TLS, a connection is counted from its handshake's end, when it can carry a request
  // (handshakes are bounded by their timeout and by maxConnections below).
  server.on(isTls ? 'secureConnection' : 'connection', (socket: Socket) => guard.admit(socket));
  server.maxConnections = limits.MAX_ADMIN_SOCKETS;
  server.on('drop', () => guard.noteClosed());
  server.on('request', ({ socket }, response) => {
    guard.active(socket);
    response.once('close', () => guard.idle(socket));
  });
  return guard;
}

function failedToListen(address: string): (error: NodeJS.ErrnoException) => never {
  return error => {
    throw listenFailure('admin.listen', address, error.code);
  };
}
