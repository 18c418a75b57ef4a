// The configuration schema: one source for validation (ajv) and for the TypeScript types
// (TypeBox). Every object rejects unknown keys so that a typo is an error, not a silently
// ignored setting.
import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  MAX_BACKENDS,
  strict,
  wrapModeSchema,
} from '../backends/config-schema.ts';
import { backendKinds, type BackendConfig } from '../backends/kinds.ts';

/** Fields common to all backends, checked before the type-specific schema. */
export const backendHeadSchema = Type.Object({
  name: backendNameSchema,
  type: Type.Union(backendKinds.map(kind => Type.Literal(kind.type))),
});

export const configSchema = Type.Object(
  {
    socket: absolutePath,
    /** Octal permission bits of the socket file; the apiserver runs as root by default. */
    socketMode: Type.String({ pattern: '^0?[0-7]{3}$', default: '0600' }),
    state: Type.Object({ path: absolutePath }, strict),
    log: Type.Object(
      {
        level: Type.Union(
          [
            Type.Literal('fatal'),
            Type.Literal('error'),
            Type.Literal('warn'),
            Type.Literal('info'),
            Type.Literal('debug'),
            Type.Literal('trace'),
          ],
          { default: 'info' },
        ),
      },
      { ...strict, default: {} },
    ),
    timeouts: Type.Object(
      {
        /** Budget for one KMS call, well inside the apiserver's default 3 s. */
        callMs: Type.Integer({ minimum: 50, maximum: 60000, default: 2500 }),
        /** How long SIGTERM waits for in-flight calls before cancelling them. */
        shutdownGraceMs: Type.Integer({ minimum: 0, maximum: 120000, default: 10000 }),
      },
      { ...strict, default: {} },
    ),
    health: Type.Object(
      {
        probeIntervalMs: Type.Integer({ minimum: 100, maximum: 3600000, default: 10000 }),
        /** How often each backend unwraps its canary (a real decrypt, no encrypt). */
        canaryIntervalMs: Type.Integer({ minimum: 1000, maximum: 86400000, default: 300000 }),
        /** Consecutive failed calls that open a backend's breaker (a failed probe opens it at once). */
        failureThreshold: Type.Integer({ minimum: 1, maximum: 100, default: 3 }),
        /** How long an open breaker waits before letting a trial call through. */
        openCooldownMs: Type.Integer({ minimum: 100, maximum: 600000, default: 5000 }),
      },
      { ...strict, default: {} },
    ),
    admin: Type.Object(
      {
        enabled: Type.Boolean({ default: true }),
        /** `HOST:PORT` (loopback by default) or `unix:///absolute/path` (mode 0600). */
        listen: Type.String({ pattern: '^(unix:///.+|[^\\s/]+:[0-9]{1,5})$', default: '127.0.0.1:8787' }),
        tokens: Type.Array(
          Type.Object(
            {
              /** Who, in audit records. */
              name: Type.String({ pattern: '^[A-Za-z0-9_.@-]{1,64}$' }),
              role: Type.Union([Type.Literal('admin'), Type.Literal('viewer')]),
              file: absolutePath,
            },
            strict,
          ),
          { maxItems: 64, default: [] },
        ),
        tls: Type.Optional(
          Type.Object(
            { certFile: absolutePath, keyFile: absolutePath, clientCaFile: Type.Optional(absolutePath) },
            strict,
          ),
        ),
        /** Whether GET /metrics needs a token (any role). */
        metricsAuth: Type.Boolean({ default: false }),
        /** The web console at /console/: a page that calls this API with the user's own token. */
        console: Type.Object({ enabled: Type.Boolean({ default: false }) }, { ...strict, default: {} }),
      },
      { ...strict, default: {} },
    ),
    /**
     * The cluster's etcd (or a dedicated one): for `kms-broker usage` and `rotate --complete`
     * (read-only scans; their flags override it), and for the shared state when `cluster` is
     * set. Without TLS files, kubeadm's are used for https:// endpoints. `serve` reads and
     * checks them only when `cluster` is set; otherwise the scan does.
     */
    etcd: Type.Optional(
      Type.Object(
        {
          endpoints: Type.Array(Type.String({ pattern: '^https?://', maxLength: 256 }), {
            minItems: 1,
            maxItems: 16,
          }),
          caFile: Type.Optional(Type.String({ minLength: 1 })),
          certFile: Type.Optional(Type.String({ minLength: 1 })),
          keyFile: Type.Optional(Type.String({ minLength: 1 })),
          prefix: Type.Optional(Type.String({ pattern: '^/.*/$', maxLength: 256 })),
        },
        strict,
      ),
    ),
    /**
     * Several brokers (one per control-plane node) sharing one key state in `etcd`. Each keeps
     * `state.path` as its local copy, which it serves from while etcd is unreachable.
     */
    cluster: Type.Optional(
      Type.Object(
        {
          /** Names the control plane; the default prefix is `/kms-broker/<name>/`. */
          name: Type.String({ pattern: '^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$' }),
          /** This broker's name among its peers (default: the host name). */
          node: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$' })),
          prefix: Type.Optional(Type.String({ pattern: '^/[^\\s]*/$', maxLength: 256 })),
          /** How long a broker that stopped answering still counts as a member. */
          leaseTtlMs: Type.Integer({ minimum: 2000, maximum: 300000, default: 15000 }),
          /**
           * How long a new key_id waits for every member to confirm it before the change is
           * given up; within the CLI's 35 s wait, and past a silent member's lease.
           */
          promotionTimeoutMs: Type.Integer({ minimum: 5000, maximum: 3600000, default: 30000 }),
          /** Members that advertise different key_ids for longer than this are warned about. */
          convergenceWarnMs: Type.Integer({ minimum: 1000, maximum: 86400000, default: 120000 }),
        },
        strict,
      ),
    ),
    /** The legacy KMS v1beta1 service on the same socket (clusters still on, or leaving, KMS v1). */
    kmsV1: Type.Object({ enabled: Type.Boolean({ default: true }) }, { ...strict, default: {} }),
    retirement: Type.Object(
      {
        /**
         * How long apiservers may go on writing under a version after it stopped being the
         * write version (they re-seed when their Status poll, about once a minute, sees the new
         * key_id): only a usage scan that began this long after proves what needs it.
         */
        scanAfterWriteMs: Type.Integer({ minimum: 0, maximum: 86400000, default: 90000 }),
        /**
         * Accepted so that configs of earlier releases still load; retirement is judged by usage
         * scans now, not by when a Decrypt last needed a version.
         */
        idleWindowMs: Type.Optional(Type.Integer({ minimum: 0 })),
      },
      { ...strict, default: {} },
    ),
    backends: Type.Array(Type.Unknown(), { minItems: 1, maxItems: MAX_BACKENDS }),
    failover: Type.Object(
      {
        order: Type.Array(backendNameSchema, { minItems: 1, maxItems: MAX_BACKENDS, uniqueItems: true }),
        wrap: Type.Union(wrapModeSchema.anyOf, { default: 'first' }),
        /**
         * How long a backend must stay healthy before it takes writes back (wrap: first) or
         * before an under-replicated seed is healed (wrap: all); keeps flapping from churning DEKs.
         */
        hysteresisMs: Type.Integer({ minimum: 0, maximum: 86400000, default: 30000 }),
      },
      strict,
    ),
  },
  strict,
);

export type BrokerConfig = Readonly<
  Omit<Static<typeof configSchema>, 'backends'> & { backends: readonly Readonly<BackendConfig>[] }
>;
