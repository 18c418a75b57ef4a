// `kms-broker encryption-config`: prints the EncryptionConfiguration that points
// kube-apiserver at this broker. It is derived from the broker's own config file, so the
// endpoint and the timeout cannot drift from the socket and the call budget the broker serves.
import { Document } from 'yaml';
import { readConfigFile } from '../config/load.ts';

export interface EncryptionConfigOptions {
  readonly config: string;
  readonly name: string;
  readonly kmsApi: 'v2' | 'v1';
  readonly cachesize?: string;
  readonly resource?: readonly string[];
  readonly identityFallback?: boolean;
}

/** Reports a bad option; the CLI prints it and exits with the usage status. */
export type UsageError = (message: string) => never;

/** The apiserver's own default and floor for `kms.timeout` (reference: kms-contract §2). */
const APISERVER_DEFAULT_TIMEOUT_MS = 3000;
/**
 * Headroom above the broker's call budget: the broker cuts every call at `timeouts.callMs`
 * and answers with its own status, which names the cause; the apiserver's deadline must
 * not fire first, or the operator sees a bare `context deadline exceeded` instead.
 */
const TIMEOUT_MARGIN_MS = 500;
/** The apiserver's default KMS v1 DEK cache size. */
const DEFAULT_V1_CACHE_SIZE = 1000;

// Letters, digits, '.', '_' and '-'. Never ':': it ends the name in the stored prefix, and the
// apiserver refuses it in v2 names. Nothing that needs quoting in a shell.
const PROVIDER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const GROUP = `${LABEL}(\\.${LABEL})*`;
/** `secrets`, `deployments.apps`, or a wildcard: `*.*` (everything), `*.` (core group), `*.apps`. */
const RESOURCE = new RegExp(`^(\\*\\.\\*|\\*\\.(${GROUP})?|${LABEL}(\\.${GROUP})?)$`);
const CACHE_SIZE = /^-?[1-9][0-9]{0,8}$/;

interface Resource {
  readonly text: string;
  /** `*` for a wildcard. */
  readonly name: string;
  /** `''` for the core group, `*` for every group. */
  readonly group: string;
}

export function encryptionConfigCommand(options: EncryptionConfigOptions, usageError: UsageError): void {
  checkProviderOptions(options, usageError);
  const resources = resourceList(options.resource ?? [], usageError);
  const config = readConfigFile(options.config);
  if (options.kmsApi === 'v1' && !config.kmsV1.enabled) {
    usageError(
      `--kms-api v1: ${options.config} sets kmsV1.enabled: false, so the broker serves no KMS v1 API`,
    );
  }
  const kms = {
    apiVersion: options.kmsApi,
    name: options.name,
    endpoint: `unix://${config.socket}`,
    ...(options.kmsApi === 'v1' && { cachesize: Number(options.cachesize ?? DEFAULT_V1_CACHE_SIZE) }),
    timeout: apiserverTimeout(config.timeouts.callMs),
  };
  const providers: object[] = [{ kms }];
  if (options.identityFallback === true) providers.push({ identity: {} });
  const document = new Document({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [{ resources, providers }],
  });
  document.commentBefore = [
    ' For kube-apiserver --encryption-provider-config; written by kms-broker encryption-config',
    ` from ${options.config}. Every value stored under this provider starts with`,
    ` 'k8s:enc:kms:${options.kmsApi}:${options.name}:'. Never rename the provider once data is written,`,
    ' and give it the same name on every control-plane node.',
  ].join('\n');
  process.stdout.write(document.toString());
}

function checkProviderOptions(options: EncryptionConfigOptions, usageError: UsageError): void {
  if (!PROVIDER_NAME.test(options.name)) {
    usageError(
      `--name '${options.name}': use 1 to 253 letters, digits, '.', '_' or '-' (never ':'), starting with a letter or digit`,
    );
  }
  if (options.cachesize === undefined) return;
  if (options.kmsApi !== 'v1') {
    usageError('--cachesize applies to --kms-api v1 only; the apiserver refuses it for KMS v2');
  }
  if (!CACHE_SIZE.test(options.cachesize)) {
    usageError(`--cachesize '${options.cachesize}': a non-zero integer (negative turns the cache off)`);
  }
}

/** The apiserver's per-call timeout, as a Go duration: above the broker's budget, never below 3 s. */
function apiserverTimeout(callMs: number): string {
  const ms = Math.max(APISERVER_DEFAULT_TIMEOUT_MS, callMs + TIMEOUT_MARGIN_MS);
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/**
 * Secrets, plus what `--resource` adds. The apiserver refuses duplicates and entries that a
 * wildcard in the same list already covers, so those are caught here with a clearer message.
 */
function resourceList(extra: readonly string[], usageError: UsageError): string[] {
  const listed: Resource[] = [];
  for (const text of extra) {
    if (!RESOURCE.test(text)) {
      usageError(
        `--resource '${text}': a lowercase plural resource (configmaps), resource.group (deployments.apps) or a wildcard (*.apps, *.*)`,
      );
    }
    const resource = parseResource(text);
    const clash = listed.find(other => covers(other, resource) || covers(resource, other));
    if (clash !== undefined) {
      usageError(`--resource '${text}' overlaps '${clash.text}'; the apiserver refuses overlapping entries`);
    }
    if (!listed.some(other => other.text === text)) listed.push(resource);
  }
  const secrets = parseResource('secrets');
  if (listed.some(resource => resource.text === 'secrets' || covers(resource, secrets))) {
    return listed.map(resource => resource.text);
  }
  return ['secrets', ...listed.map(resource => resource.text)];
}

function parseResource(text: string): Resource {
  const dot = text.indexOf('.');
  return dot === -1
    ? { text, name: text, group: '' }
    : { text, name: text.slice(0, dot), group: text.slice(dot + 1) };
}

/** Whether wildcard `a` matches `b` (a different entry). */
function covers(a: Resource, b: Resource): boolean {
  return a.text !== b.text && a.name === '*' && (a.group === '*' || a.group === b.group);
}
