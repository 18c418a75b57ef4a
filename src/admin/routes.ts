// The admin API's routes. Reads need a viewer or admin token, changes an admin token;
// every change writes an audit record (who, what, before, after, outcome).
import type { FastifyInstance } from 'fastify';
import type { AdminService, FailoverSetting } from '../broker/ports.ts';
import { BrokerError } from '../errors.ts';
import { callerOf, type AccessDeps } from './access.ts';
import { sendProblem } from './problem.ts';
import { auditedBy, problem, problems } from './route-support.ts';
import { registerUsageRoutes } from './usage-routes.ts';
import {
  backendParams,
  backendsSchema,
  emptyQuery,
  clusterSchema,
  failoverResultSchema,
  failoverSchema,
  keysSchema,
  retireQuery,
  rotateResultSchema,
  statusSchema,
  versionParams,
  versionStateSchema,
  whoamiSchema,
} from './schemas.ts';

/** What /metrics serves: the Prometheus text and its content type. */
export interface MetricsSource {
  readonly contentType: string;
  text(): Promise<string>;
}

export interface RouteDeps extends Omit<AccessDeps, 'checkHost'> {
  readonly admin: AdminService;
  readonly metrics: MetricsSource;
  /** Whether the KMS socket is being served (for /readyz). */
  readonly isServing: () => boolean;
  readonly metricsAuth: boolean;
  readonly version: string;
}

export function registerRoutes(app: FastifyInstance, deps: RouteDeps): void {
  const { admin } = deps;
  const audited = auditedBy(deps.audit);

  app.get('/healthz', { schema: { summary: 'The process is alive (no auth)', security: [] } }, () => ({
    status: 'ok',
  }));

  app.get(
    '/readyz',
    { schema: { summary: 'The KMS socket is served and Status is healthy (no auth)', security: [] } },
    (_request, reply) => {
      const { healthz } = admin.status();
      if (deps.isServing() && healthz === 'ok') return { status: 'ready' };
      const reason = deps.isServing() ? healthz : 'the KMS socket is not served';
      return sendProblem(reply, new BrokerError('BACKEND_UNAVAILABLE', `not ready: ${reason}`));
    },
  );

  app.get(
    '/metrics',
    {
      config: deps.metricsAuth ? { role: 'viewer' } : {},
      schema: { summary: 'Prometheus metrics', security: deps.metricsAuth ? [{ bearer: [] }] : [] },
    },
    async (_request, reply) => reply.type(deps.metrics.contentType).send(await deps.metrics.text()),
  );

  app.get(
    '/v1/status',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'key_id, health and write versions',
        querystring: emptyQuery,
        response: { 200: statusSchema, ...problems },
      },
    },
    () => ({ ...admin.status(), version: deps.version }),
  );

  app.get(
    '/v1/whoami',
    {
      config: { role: 'viewer' },
      schema: {
        summary: "The caller: its token's name and role (what the console may offer)",
        response: { 200: whoamiSchema, ...problems },
      },
    },
    request => callerOf(request),
  );

  app.get(
    '/v1/backends',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'Health and breaker state per backend',
        response: { 200: backendsSchema, ...problems },
      },
    },
    () => ({ backends: admin.backends() }),
  );

  app.get(
    '/v1/keys',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'Key versions per backend, with their role and usage',
        response: { 200: keysSchema, ...problems },
      },
    },
    () => ({ backends: admin.keys() }),
  );

  app.post(
    '/v1/backends/:name/rotate',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Create a new key version; it becomes the write version',
        params: backendParams,
        response: { 200: rotateResultSchema, ...problems, 404: problem },
      },
    },
    async request => {
      const caller = callerOf(request);
      const { name } = request.params as { name: string };
      const before = admin.status().keyId;
      const result = await audited(caller, 'rotate', { backend: name, keyIdBefore: before }, () =>
        admin.rotate(name),
      );
      return { backend: name, version: result.version, keyId: result.keyId };
    },
  );

  for (const action of ['retire', 'restore'] as const) {
    app.post(
      `/v1/backends/:name/versions/:version/${action}`,
      {
        config: { role: 'admin' },
        schema: {
          summary:
            action === 'retire'
              ? 'Retire a version: it no longer unwraps (409 while still needed)'
              : 'Undo a retirement',
          params: versionParams,
          querystring: action === 'retire' ? retireQuery : emptyQuery,
          response: {
            200: versionStateSchema,
            ...problems,
            404: problem,
            409: problem,
          },
        },
      },
      async request => {
        const caller = callerOf(request);
        const { name, version } = request.params as { name: string; version: string };
        const force = action === 'retire' && (request.query as { force?: boolean }).force === true;
        const result = await audited(
          caller,
          force ? 'retire (forced)' : action,
          { backend: name, version },
          () => (action === 'retire' ? admin.retire(name, version, { force }) : admin.restore(name, version)),
        );
        return { backend: name, version, state: result.after, forced: force };
      },
    );
  }

  app.get(
    '/v1/failover',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'The failover setting, with its ETag',
        response: { 200: failoverSchema, ...problems },
      },
    },
    (_request, reply) => {
      const { setting, etag } = admin.failover();
      void reply.header('etag', etag);
      return setting;
    },
  );

  app.put(
    '/v1/failover',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Change the failover setting (If-Match: the ETag from GET; 412 on a lost update)',
        body: failoverSchema,
        headers: { type: 'object', properties: { 'if-match': { type: 'string' } } },
        response: {
          200: failoverResultSchema,
          ...problems,
          412: problem,
          428: problem,
        },
      },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const etag = request.headers['if-match'];
      if (etag === undefined)
        throw new BrokerError('PRECONDITION_REQUIRED', 'send If-Match with the ETag from GET /v1/failover');
      const body = request.body as FailoverSetting;
      const result = await audited(caller, 'set failover', { order: body.order, wrap: body.wrap }, () =>
        admin.setFailover({ order: body.order, wrap: body.wrap }, etag),
      );
      void reply.header('etag', admin.failover().etag);
      return { ...result.after, keyId: result.keyId };
    },
  );
  app.get(
    '/v1/cluster',
    {
      config: { role: 'viewer' },
      schema: {
        summary:
          "The brokers sharing this one's state: what each advertises and unwraps, and whether they agree",
        querystring: emptyQuery,
        response: { 200: clusterSchema, ...problems, 404: problem },
      },
    },
    () => admin.cluster(),
  );
  registerUsageRoutes(app, admin, audited);
}
