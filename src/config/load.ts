// Loads the YAML configuration once: parse, validate against the schema (defaults filled
// in, unknown keys rejected), check what a schema cannot say, then deep-freeze; to serve,
// also read and check the files it names. Messages name the path of the offending key,
// e.g. `backends[0].tokenLabel`. parseConfig and validateConfig touch no disk.
import { readFileSync } from 'node:fs';
import type { Static, TObject } from '@sinclair/typebox';
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { backendKind, writeOnlyBackends, type BackendType } from '../backends/kinds.ts';
import { BrokerError } from '../errors.ts';
import type { FileReader } from '../file-reader.ts';
import { checkConfigFiles } from './config-files.ts';
import { schemaProblems } from './schema-errors.ts';
import { backendHeadSchema, configSchema, type BrokerConfig } from './schema.ts';

const MAX_SOCKET_PATH_BYTES = 107;

// verbose: errors carry their schema, whose property names suggest the key a typo meant.
const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, verbose: true });
const validateTop = ajv.compile(configSchema);
const validateHead = ajv.compile(backendHeadSchema);

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
  let raw: unknown;
  try {
    raw = parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new BrokerError(
      'CONFIG_INVALID',
      `${source}: not valid YAML: ${(error as Error).message.split('\n')[0]}`,
    );
  }
  return validateConfig(raw, source);
}

export function validateConfig(raw: unknown, source = 'config'): BrokerConfig {
  const candidate: unknown = structuredClone(raw ?? {});
  // Every problem at once: the top level's and each backend's, so that one edit fixes all.
  const problems = validateTop(candidate) ? [] : schemaProblems(validateTop.errors, '');
  const backends = (candidate as { backends?: unknown }).backends;
  if (Array.isArray(backends))
    backends.forEach((backend, index) => problems.push(...backendProblems(backend, index)));
  if (problems.length === 1) throw invalid(source, problems[0] ?? '');
  if (problems.length > 1) throw invalid(source, `${problems.length} problems:\n  ${problems.join('\n  ')}`);
  const config = candidate as BrokerConfig;
  checkCrossReferences(config, source);
  return deepFreeze(config);
}

/** What is wrong with one backend: its common fields, then its kind's schema, then its kind's rules. */
function backendProblems(backend: unknown, index: number): string[] {
  const at = `/backends/${index}`;
  if (!validateHead(backend)) return schemaProblems(onlyHeadErrors(validateHead.errors), at);
  const kind = backendKind((backend as { type: BackendType }).type);
  // ajv keeps what it compiled by schema, so a kind's schema compiles once, when configured.
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

function checkCrossReferences(config: BrokerConfig, source: string): void {
  const names = new Set<string>();
  config.backends.forEach((backend, index) => {
    if (names.has(backend.name))
      throw invalid(source, `backends[${index}].name: duplicate backend name '${backend.name}'`);
    names.add(backend.name);
  });
  config.failover.order.forEach((name, index) => {
    if (!names.has(name)) throw invalid(source, `failover.order[${index}]: no backend is named '${name}'`);
  });
  const writeOnly = writeOnlyBackends(config.backends);
  config.backends.forEach((backend, index) => {
    if (writeOnly.has(backend.name) && !config.failover.order.includes(backend.name))
      throw invalid(
        source,
        `backends[${index}]: escrow backend '${backend.name}' wraps only as a member of the failover order; add it to failover.order`,
      );
  });
  if (config.failover.order.every(name => writeOnly.has(name)))
    throw invalid(
      source,
      'failover.order: lists only escrow backends, which never unwrap; add a backend that can (an HSM, Transit, a cloud KMS)',
    );
  if (config.state.path === config.socket) throw invalid(source, 'state.path: must differ from socket');
  if (config.cluster !== undefined && config.etcd === undefined)
    throw invalid(
      source,
      'cluster: the shared state needs etcd.endpoints (kubeadm: etcd: {endpoints: [https://127.0.0.1:2379]})',
    );
  if (config.cluster !== undefined && config.cluster.promotionTimeoutMs <= config.cluster.leaseTtlMs)
    throw invalid(
      source,
      'cluster.promotionTimeoutMs: must exceed cluster.leaseTtlMs, so that a promotion outlasts a silent member',
    );
  const { admin } = config;
  if (admin.enabled && !admin.listen.startsWith('unix://') && !isLoopback(admin.listen)) {
    if (admin.tls === undefined || admin.tokens.length === 0) {
      throw invalid(
        source,
        'admin.listen: a non-loopback address needs admin.tls and at least one admin token',
      );
    }
  }
  if (admin.enabled && admin.console.enabled) {
    if (admin.listen.startsWith('unix://'))
      throw invalid(
        source,
        'admin.console.enabled: a browser cannot reach a unix socket; set admin.listen to HOST:PORT (loopback, or with admin.tls)',
      );
    if (admin.tokens.length === 0)
      throw invalid(source, 'admin.console.enabled: signing in needs a token; add one to admin.tokens');
  }
  // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
  const socketBytes = Buffer.byteLength(config.socket);
  if (socketBytes > MAX_SOCKET_PATH_BYTES) {
    throw invalid(
      source,
      `socket: the path is ${socketBytes} bytes; unix sockets allow at most ${MAX_SOCKET_PATH_BYTES}`,
    );
  }
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
