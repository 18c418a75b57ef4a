// Who may call what, checked in an onRequest hook: before fastify parses or validates
// anything, so a caller without a valid token learns nothing of the schemas (a 401 says only
// that a token is needed). Each route names the role it needs in its config; routes without
// one (health, readiness, the OpenAPI document, /metrics without metricsAuth) are open.
import { isIPv4 } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { requireRole, type Authenticator, type Caller, type Role } from './auth.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The role a route needs; without one the route is open. */
    role?: Role;
  }
}

export interface AccessDeps {
  readonly authenticate: Authenticator;
  readonly audit: Logger;
  /**
   * Whether to refuse a Host that is not the loopback: on the plain-HTTP TCP listener
   * (which the config allows only on a loopback address). There a page from any site can
   * make the browser send it requests, by pointing its own name at 127.0.0.1 (DNS
   * rebinding); the browser then sends that name as Host. Not on a unix socket, which no
   * browser can reach (and whose clients send any Host, e.g. curl's `x`). Not with TLS:
   * the browser completes the handshake only with a certificate valid for the name it
   * dialled, which a rebinding page's name is not, so pinning Host there would need a
   * setting that protects nothing more.
   */
  readonly checkHost: boolean;
}

const callers = new WeakMap<FastifyRequest, Caller>();

export function registerAccessHook(app: FastifyInstance, deps: AccessDeps): void {
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      admit(request, deps);
      done();
    } catch (error) {
      done(error as Error);
    }
  });
}

function admit(request: FastifyRequest, deps: AccessDeps): void {
  if (deps.checkHost && !isLoopbackHost(request.headers.host)) {
    throw new BrokerError(
      'HOST_NOT_ALLOWED',
      'this listener answers only requests addressed to the loopback: Host 127.0.0.1, [::1] or localhost',
    );
  }
  const { role } = request.routeOptions.config;
  if (role !== undefined) callers.set(request, authorize(request, role, deps));
}

/** The caller the hook authenticated for a route that names a role. */
export function callerOf(request: FastifyRequest): Caller {
  const caller = callers.get(request);
  if (caller === undefined) throw new BrokerError('INTERNAL', 'route without a role asked for its caller');
  return caller;
}

/** Host as a browser sends it for a page really loaded from this machine, any port. */
export function isLoopbackHost(host: string | undefined): boolean {
  const name = host?.replace(/:\d{1,5}$/, '').toLowerCase();
  return (
    name === 'localhost' || name === '[::1]' || (isIPv4(name ?? '') && name?.startsWith('127.') === true)
  );
}

function authorize(request: FastifyRequest, role: Role, deps: AccessDeps): Caller {
  const caller = deps.authenticate(request.headers.authorization);
  try {
    requireRole(caller, role);
  } catch (error) {
    // An attempted change by a token that may not make it is worth an audit record too.
    deps.audit.warn(
      { actor: caller.name, action: `${request.method} ${request.url}`, outcome: 'FORBIDDEN' },
      'admin change refused',
    );
    throw error;
  }
  const subject = clientSubject(request);
  return subject === undefined ? caller : { ...caller, name: `${caller.name} (${subject})` };
}

/** The verified client certificate's subject, when mTLS is on. */
function clientSubject(request: FastifyRequest): string | undefined {
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (socket.authorized !== true || socket.getPeerCertificate === undefined) return undefined;
  const subject = socket.getPeerCertificate().subject as { CN?: string } | undefined;
  return subject?.CN === undefined ? undefined : `CN=${subject.CN}`;
}
