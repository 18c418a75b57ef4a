// The admin API's routes for the evidence retirement is judged by: recording a usage scan
// of the cluster's etcd (`kms-broker usage` posts it), reading what stored data needs of
// every key version, and where a rotation stands, for dashboards.
import type { FastifyInstance } from 'fastify';
import { usageScanSchema, type AdminService, type UsageScan } from '../broker/ports.ts';
import { callerOf } from './access.ts';
import { MAX_SCAN_BODY_BYTES } from './limits.ts';
import { problem, problems, type Audited } from './route-support.ts';
import { rotationSchema, scanRecordedSchema, usageSchema } from './schemas.ts';

export function registerUsageRoutes(app: FastifyInstance, admin: AdminService, audited: Audited): void {
  app.post(
    '/v1/usage/scans',
    {
      config: { role: 'admin' },
      bodyLimit: MAX_SCAN_BODY_BYTES,
      schema: {
        summary: 'Record a usage scan of the cluster etcd (kms-broker usage); 409 if a newer one is kept',
        body: usageScanSchema,
        response: { 201: scanRecordedSchema, ...problems, 409: problem },
      },
    },
    async (request, reply) => {
      const scan = request.body as UsageScan;
      const recorded = { scannedAt: scan.scannedAt, revision: scan.revision, objects: scan.objects };
      await audited(callerOf(request), 'record usage scan', recorded, () => admin.recordScan(scan));
      return reply.code(201).send(recorded);
    },
  );

  app.get(
    '/v1/usage',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'The last usage scan, and what stored data needs of every key version',
        response: { 200: usageSchema, ...problems },
      },
    },
    () => {
      const { lastScan, versions } = admin.usage();
      return { lastScan: lastScan ?? null, versions };
    },
  );

  app.get(
    '/v1/rotation',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'Where a rotation stands: the versions that stopped writing, each with its stage',
        response: { 200: rotationSchema, ...problems },
      },
    },
    () => admin.rotation(),
  );
}
