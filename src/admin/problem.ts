// Errors as application/problem+json (RFC 9457) with a stable `type` per catalog code:
// every error the admin listener sends, including the framework's own (schema, bad URL,
// over-long path segment) and node's refusals of what is not a readable HTTP request.
import { http } from '../node-http.ts';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BrokerError, errorCatalog, isBrokerError, toBrokerError } from '../errors.ts';
import { HEADERS_TIMEOUT_MS, MAX_BODY_BYTES, MAX_PARAM_LENGTH, REQUEST_TIMEOUT_MS } from './limits.ts';

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
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return sendProblem(reply, new BrokerError('BODY_TOO_LARGE', `the body exceeds ${MAX_BODY_BYTES} bytes`));
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
    default:
      return 'the request is malformed';
  }
}

/** Errors fastify raises before routing (fastify's `frameworkErrors`). */
export function frameworkErrorHandler(
  error: FastifyError,
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  void sendProblem(
    reply,
    error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? new BrokerError('URI_TOO_LONG', `a path segment is longer than ${MAX_PARAM_LENGTH} characters`)
      : new BrokerError('INVALID_REQUEST', 'the URL is malformed (an invalid percent-encoding)'),
  );
}

/**
 * What node refuses before any request exists (fastify's `clientErrorHandler`): headers
 * too large, a request that did not arrive in time, bytes that are not HTTP/1.1. There is no
 * reply object yet, so the answer is written to the socket, which is then closed.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  if (socket.writable) {
    const problem = toProblem(clientError(error.code));
    const body = JSON.stringify(problem);
    socket.write(
      `HTTP/1.1 ${problem.status} ${http.STATUS_CODES[problem.status] ?? ''}\r\n` +
        `Content-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

function clientError(code: string | undefined): BrokerError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new BrokerError(
        'HEADERS_TOO_LARGE',
        `the request line and headers exceed ${http.maxHeaderSize / 1024} KiB`,
      );
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new BrokerError(
        'REQUEST_TIMEOUT',
        `the headers must arrive within ${HEADERS_TIMEOUT_MS / 1000} s and the whole request within ${REQUEST_TIMEOUT_MS / 1000} s`,
      );
    default:
      return new BrokerError('INVALID_REQUEST', 'the request is not valid HTTP/1.1');
  }
}
