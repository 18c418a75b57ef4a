// The web console (admin.console.enabled): one page, its two scripts and its style, served by the
// admin listener at /console/. The page holds no data: it calls the JSON API with the token
// the user pastes, so it has the same tokens, roles and listener as every other client, and
// its own routes need no token. The files are read once at start and served from memory with
// a strict Content-Security-Policy: no inline script or style, nothing from another origin.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { BackendView } from '../../broker/ports.ts';
import { BrokerError } from '../../errors.ts';
import { sendProblem } from '../problem.ts';
import { HealthHistory, registerHealthHistory } from './health-history.ts';

export const CONSOLE_PATH = '/console/';

/**
 * Only this origin's files: no inline script or style (no 'unsafe-inline' anywhere), no
 * plugins, no <base> or form posts elsewhere, never inside a frame. `data:` images only for
 * the empty favicon, which keeps the browser from asking for /favicon.ico.
 */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The files the console consists of, by the name they are served under; nothing else is. */
const FILES = {
  'index.html': 'text/html; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'console-dom.js': 'text/javascript; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
} as const;

type FileName = keyof typeof FILES;

interface ConsoleFile {
  readonly body: Buffer;
  readonly contentType: string;
  readonly etag: string;
}

/** Reads the console's files (at start, so a missing one stops the broker, not a page view). */
export function loadConsoleFiles(
  folder: URL = new URL('./', import.meta.url),
): ReadonlyMap<string, ConsoleFile> {
  const files = new Map<string, ConsoleFile>();
  for (const [name, contentType] of Object.entries(FILES) as [FileName, string][]) {
    const body = readFileSync(new URL(name, folder));
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    files.set(name, { body, contentType, etag });
  }
  return files;
}

/**
 * The console's pages and the one API route only it needs (the health history it samples).
 * `backends` is the admin service's own report, read from memory.
 */
export function registerConsole(
  app: FastifyInstance,
  backends: () => readonly BackendView[],
  files = loadConsoleFiles(),
): void {
  registerHealthHistory(app, new HealthHistory(backends));
  // Not part of the API: kept out of the OpenAPI document.
  const options = { schema: { hide: true } };
  app.get('/console', options, (_request, reply) => reply.redirect(CONSOLE_PATH, 301));
  app.get(CONSOLE_PATH, options, (request, reply) => send(files.get('index.html'), request, reply));
  app.get(`${CONSOLE_PATH}:file`, options, (request, reply) => {
    // Only the known names resolve: `..`, encoded slashes and every other name are simply
    // not in the map, so there is no path on disk to traverse to.
    const { file } = request.params as { file: string };
    return send(Object.hasOwn(FILES, file) ? files.get(file) : undefined, request, reply);
  });
}

function send(file: ConsoleFile | undefined, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (file === undefined) {
    return sendProblem(reply, new BrokerError('NOT_FOUND', `no console file ${request.url.split('?')[0]}`));
  }
  void reply
    .header('content-security-policy', CONSOLE_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cross-origin-resource-policy', 'same-origin')
    // Revalidate every time: an upgraded broker serves its own files at once, by ETag.
    .header('cache-control', 'no-cache')
    .header('etag', file.etag);
  if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
  return reply.type(file.contentType).send(file.body);
}
