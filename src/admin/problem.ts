// Errors as application/problem+json (RFC 9457) with a stable `type` per catalog code.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BrokerError, errorCatalog, isBrokerError, toBrokerError } from '../errors.ts';

export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
}

function problemType(code: string): string {
  return `urn:kms-broker:error:${code}`;
}

function toProblem(error: BrokerError): Problem {
  return {
    type: problemType(error.code),
    title: errorCatalog[error.code].title,
    status: error.httpStatus,
    detail: error.message,
    code: error.code,
  };
}

export function sendProblem(reply: FastifyReply, error: BrokerError): FastifyReply {
  // RFC 9110: a 401 names the scheme the client should use.
  if (error.httpStatus === 401) void reply.header('www-authenticate', 'Bearer realm="kms-broker"');
  return reply.code(error.httpStatus).type('application/problem+json').send(toProblem(error));
}

/** Fastify's own errors (schema validation, bad JSON, wrong content type) become catalog errors. */
export function problemHandler(
  error: FastifyError,
  _request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  if (isBrokerError(error)) return sendProblem(reply, error);
  if (error.validation !== undefined) {
    const first = error.validation[0];
    const where = `${error.validationContext ?? 'request'}${first?.instancePath ?? ''}`;
    const extra = (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const message =
      extra === undefined ? `${where}: ${first?.message ?? 'invalid'}` : `${where}/${extra}: unknown field`;
    return sendProblem(reply, new BrokerError('INVALID_REQUEST', message));
  }
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    return sendProblem(reply, new BrokerError('INVALID_REQUEST', plainReason(error)));
  }
  return sendProblem(reply, toBrokerError(error));
}

/** Fastify's client-error messages are its own fixed texts (no user data); keep their gist. */
function plainReason(error: FastifyError): string {
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'the body is not valid JSON';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'send the body as application/json';
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'the body is too large';
    default:
      return 'the request is malformed';
  }
}
