// What the admin listener allows one connection and one request: caps and timeouts that
// keep a flood of idle or slow connections from holding the descriptors the KMS socket and
// the backends need. Fixed, not configured: the admin API's clients (the CLI, a Prometheus
// scrape, kubelet probes) are few and answer at once, so no operator needs other values.

/** Connections held at once; at the cap the longest-idle one is closed (ConnectionGuard). */
export const MAX_ADMIN_CONNECTIONS = 64;
/**
 * Raw TCP connections at most, including TLS handshakes the cap above does not see yet
 * (node refuses the rest at accept).
 */
export const MAX_ADMIN_SOCKETS = 2 * MAX_ADMIN_CONNECTIONS;
/** The request line and headers must arrive within this (node's default: 60 s). */
export const HEADERS_TIMEOUT_MS = 10_000;
/** The whole request, body included (node's default: 300 s; fastify's: none). */
export const REQUEST_TIMEOUT_MS = 30_000;
/** How often node looks for requests past the two timeouts above (node's default: 30 s). */
export const TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/** An idle keep-alive connection is closed after this (fastify's default: 72 s). */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/**
 * A connection that neither sends nor receives for this long is closed, whatever it is
 * doing: the backstop for a client that stops reading its response. Well above the time
 * a change takes (a rotation waits on its backend within timeouts.callMs).
 */
export const SOCKET_IDLE_TIMEOUT_MS = 60_000;
/** A TLS handshake must finish within this (node's default: 120 s). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Request bodies (a failover setting is well under 1 KiB). */
export const MAX_BODY_BYTES = 64 * 1024;
/** A path segment: the longest key version the schemas accept. */
export const MAX_PARAM_LENGTH = 128;
/** A usage scan's body: its counts are bounded (broker/usage-scan.ts) to well under this. */
export const MAX_SCAN_BODY_BYTES = 1024 * 1024;
