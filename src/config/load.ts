// Loads the YAML configuration once: parse, validate against the schema (defaults filled
// in, unknown keys rejected), check what a schema cannot say, then deep-freeze; to serve,
// also read and check the files it names. Messages name the path of the offending key,
// e.g. `backends[0].tokenLabel`. parseConfig and validateConfig touch no disk.
import { readFileSync } from 'node:fs';
import type { Static, TObject } from '@sinclair/typebox';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { backendKind, writeOnlyBackends, type BackendType } from '../backends/kinds.ts';
import { BrokerError } from '../errors.ts';
import type { FileReader } from '../file-reader.ts';
import { checkConfigFiles } from './config-files.ts';
import { schemaProblems } from './schema-errors.ts';
import { backendHeadSchema, configSchema, type BrokerConfig } from './schema.ts';

const MAX_SOCKET_PATH_BYTES = 107;

/**
 * The validators, compiled on first use: compiling costs more than a CLI command that never
 * reads a config may spend (`kms-broker --version`, `status --admin ...`). ajv keeps what it
 * compiled by schema, so a backend kind's schema also compiles once, when first configured.
 */
interface Validators {
  readonly ajv: Ajv;
  readonly top: ValidateFunction;
  readonly head: ValidateFunction;
}
let compiled: Validators | undefined;

function validators(): Validators {
  if (compiled === undefined) {
    // verbose: errors carry their schema, whose property names suggest the key a typo meant.
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, verbose: true });
    compiled = { ajv, top: ajv.compile(configSchema), head: ajv.compile(backendHeadSchema) };
  }
  return compiled;
}

export interface LoadedConfig {
  readonly config: BrokerConfig;
  /**
   * Reads a non-secret file the config names (a CA bundle, a TLS certificate or key) from
   * what was read and checked at load, so that it is not read twice; other paths from disk.
   */
  readonly readFile: FileReader;
}

/**
 * Loads the config to serve with: validated, frozen, and every file it names read and
 * checked, so that a missing certificate or secret fails here, naming the key that names it.
 */
export function loadConfigFile(path: string, read: FileReader = readFileSync): LoadedConfig {
  const config = parseConfig(readConfigText(path, read), path);
  const files = checkConfigFiles(config, read, path);
  return { config, readFile: file => files.get(file) ?? read(file) };
}

/**
 * The config's settings alone, for commands that open no backend and no listener (status,
 * encryption-config): they must work where the broker's secrets are not readable.
 */
export function readConfigFile(path: string): BrokerConfig {
  return parseConfig(readConfigText(path, readFileSync), path);
}

function readConfigText(path: string, read: FileReader): string {
  try {
    return read(path).toString('utf8');
  } catch (error) {
    throw new BrokerError(
      'CONFIG_INVALID',
      `cannot read config file ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
}

export function parseConfig(text: string, source = 'config'): BrokerConfig {
  const parsed = parseYamlText(text);
  if ('problem' in parsed) throw invalid(source, parsed.problem);
  return validateConfig(parsed.raw, source);
}

/** The YAML of a config, or what is wrong with it (its first line: the parser's position). */
export function parseYamlText(text: string): { readonly raw: unknown } | { readonly problem: string } {
  try {
    return { raw: parseYaml(text, { maxAliasCount: 100 }) as unknown };
  } catch (error) {
    return { problem: `not valid YAML: ${(error as Error).message.split('\n')[0]}` };
  }
}

export function validateConfig(raw: unknown, source = 'config'): BrokerConfig {
  const { config, problems } = configProblems(raw);
  if (problems.length === 1) throw invalid(source, problems[0] ?? '');
  if (problems.length > 1) throw invalid(source, `${problems.length} problems:\n  ${problems.join('\n  ')}`);
  return deepFreeze(config);
}

/**
 * Every problem of a parsed config at once: the schema's at the top level and each backend's,
 * then the cross-references (names, the failover order, listeners): only on a config the schema
 * accepts, unless `evenIfMalformed` (check-config), where they are checked as far as its shape
 * allows. The candidate comes back
 * with the schema's defaults filled in; it is a BrokerConfig only when there are no problems.
 */
export function configProblems(
  raw: unknown,
  { evenIfMalformed = false }: { readonly evenIfMalformed?: boolean } = {},
): { readonly config: BrokerConfig; readonly problems: string[] } {
  const candidate: unknown = structuredClone(raw ?? {});
  const { top } = validators();
  // Every problem at once: the top level's and each backend's, so that one edit fixes all.
  const problems = top(candidate) ? [] : schemaProblems(top.errors, '');
  const backends = (candidate as { backends?: unknown }).backends;
  if (Array.isArray(backends))
    backends.forEach((backend, index) => problems.push(...backendProblems(backend, index)));
  const config = candidate as BrokerConfig;
  if (problems.length === 0) problems.push(...crossReferenceProblems(config));
  else if (evenIfMalformed) problems.push(...tolerantly(() => crossReferenceProblems(config)));
  return { config, problems };
}

/**
 * Checks that assume a well-formed config, run on one with schema problems too so that one
 * edit fixes all; a part too malformed to check is left to the schema's own message.
 */
export function tolerantly(check: () => string[]): string[] {
  try {
    return check();
  } catch (error) {
    if (error instanceof BrokerError) throw error;
    return [];
  }
}

/** What is wrong with one backend: its common fields, then its kind's schema, then its kind's rules. */
function backendProblems(backend: unknown, index: number): string[] {
  const at = `/backends/${index}`;
  const { ajv, head } = validators();
  if (!head(backend)) return schemaProblems(onlyHeadErrors(head.errors), at);
  const kind = backendKind((backend as { type: BackendType }).type);
  const validate = ajv.compile<Static<TObject>>(kind.schema);
  if (!validate(backend)) return schemaProblems(validate.errors, at);
  const violation = kind.check(backend);
  if (violation === undefined) return [];
  const path = violation.path === undefined ? '' : `.${violation.path}`;
  return [`backends[${index}]${path}: ${violation.message}`];
}

/** The head schema allows other keys; only its own complaints are relevant. */
function onlyHeadErrors(errors: ErrorObject[] | null | undefined): ErrorObject[] {
  return (errors ?? []).filter(error => error.keyword !== 'additionalProperties');
}

function crossReferenceProblems(config: BrokerConfig): string[] {
  const problems: string[] = [];
  const names = new Set<string>();
  config.backends.forEach((backend, index) => {
    if (names.has(backend.name))
      problems.push(`backends[${index}].name: duplicate backend name '${backend.name}'`);
    names.add(backend.name);
  });
  config.failover.order.forEach((name, index) => {
    if (!names.has(name)) problems.push(`failover.order[${index}]: no backend is named '${name}'`);
  });
  const writeOnly = writeOnlyBackends(config.backends);
  config.backends.forEach((backend, index) => {
    if (writeOnly.has(backend.name) && !config.failover.order.includes(backend.name))
      problems.push(
        `backends[${index}]: escrow backend '${backend.name}' wraps only as a member of the failover order; add it to failover.order`,
      );
  });
  if (config.failover.order.every(name => writeOnly.has(name)))
    problems.push(
      'failover.order: lists only escrow backends, which never unwrap; add a backend that can (an HSM, Transit, a cloud KMS)',
    );
  if (config.state.path === config.socket) problems.push('state.path: must differ from socket');
  if (config.cluster !== undefined && config.etcd === undefined)
    problems.push(
      'cluster: the shared state needs etcd.endpoints (kubeadm: etcd: {endpoints: [https://127.0.0.1:2379]})',
    );
  if (config.cluster !== undefined && config.cluster.promotionTimeoutMs <= config.cluster.leaseTtlMs)
    problems.push(
      'cluster.promotionTimeoutMs: must exceed cluster.leaseTtlMs, so that a promotion outlasts a silent member',
    );
  const { admin } = config;
  if (admin.enabled && !admin.listen.startsWith('unix://') && !isLoopback(admin.listen)) {
    if (admin.tls === undefined || admin.tokens.length === 0) {
      problems.push('admin.listen: a non-loopback address needs admin.tls and at least one admin token');
    }
  }
  if (admin.enabled && admin.console.enabled) {
    if (admin.listen.startsWith('unix://'))
      problems.push(
        'admin.console.enabled: a browser cannot reach a unix socket; set admin.listen to HOST:PORT (loopback, or with admin.tls)',
      );
    if (admin.tokens.length === 0)
      problems.push('admin.console.enabled: signing in needs a token; add one to admin.tokens');
  }
  // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
  const socketBytes = Buffer.byteLength(config.socket);
  if (socketBytes > MAX_SOCKET_PATH_BYTES) {
    problems.push(
      `socket: the path is ${socketBytes} bytes; unix sockets allow at most ${MAX_SOCKET_PATH_BYTES}`,
    );
  }
  return problems;
}

/** Whether `host:port` binds a loopback address only. */
function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function invalid(source: string, message: string): BrokerError {
  return new BrokerError('CONFIG_INVALID', `${source}: ${message}`);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
