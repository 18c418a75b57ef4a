// The admin HTTP listener (fastify): loopback TCP or a 0600 unix socket by default, TLS and
// client certificates when configured. Request bodies are validated by schema with unknown
// fields rejected (never silently dropped); the OpenAPI document is generated from the
// same schemas.
import { chmod } from 'node:fs/promises';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import type { BrokerConfig } from '../config/schema.ts';
import type { FileReader } from '../file-reader.ts';
import { listenFailure, prepareSocketPath } from '../socket-path.ts';
import type { Logger } from '../log.ts';
import { BrokerError } from '../errors.ts';
import { problemHandler, sendProblem } from './problem.ts';
import { registerRoutes, type RouteDeps } from './routes.ts';
import { problemSchema } from './schemas.ts';

export type AdminAppDeps = RouteDeps;

async function buildAdminApp(
  deps: AdminAppDeps,
  https?: { cert: Buffer; key: Buffer; ca?: Buffer },
): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: 64 * 1024,
    ajv: { customOptions: { removeAdditional: false, allErrors: false } },
    ...(https !== undefined && {
      https: {
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
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      new BrokerError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0] ?? ''}`),
    ),
  );
  registerRoutes(app, deps);
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
  const app = await buildAdminApp(deps, tls);
  let address: string;
  if (config.listen.startsWith('unix://')) {
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
  return { address, close: () => app.close() };
}

function failedToListen(address: string): (error: NodeJS.ErrnoException) => never {
  return error => {
    throw listenFailure('admin.listen', address, error.code);
  };
}
