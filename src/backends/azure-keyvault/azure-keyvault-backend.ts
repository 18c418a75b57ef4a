// Azure Key Vault / Managed HSM backend. The KEK is a Key Vault key (RSA, or AES on Managed
// HSM); every wrap names the exact key version the broker's key_id advertises, and that
// 32-hex version id is what the envelope records. One HTTP call per wrap or unwrap (the
// SDK's key GET is skipped), one key read per probe, never a wrap. Rotations done in the
// vault are offered to the broker through `externalRotation`, which adopts them once stable.
import { createHash, timingSafeEqual } from 'node:crypto';
import { Agent } from 'node:https';
import type { TokenCredential } from '@azure/identity';
import {
  CryptographyClient,
  KeyClient,
  type KeyProperties,
  type KeyVaultKey,
  type KeyWrapAlgorithm,
  type WrapKeyOptions,
} from '@azure/keyvault-keys';
import type { AzureKeyVaultBackendConfig } from './azure-keyvault-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import { BrokerError } from '../../errors.ts';
import type { FileReader } from '../../file-reader.ts';
import type { Logger } from '../../log.ts';
import type { BackendDeps } from '../backend-kind.ts';
import type { BackendCallError } from '../call-policy.ts';
import type { ExternalRotation, KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import { unlessMissing } from '../key-missing.ts';
import { createRemoteCaller, type Need, type RemoteCaller } from '../remote-caller.ts';
import { createAzureCredential } from './azure-credential.ts';
import { azureFailures } from './azure-errors.ts';
import type { Deadline } from '../../deadline.ts';

/** Key Vault's version ids are 32 hex digits; anything else never reaches a URL. */
const VERSION_PATTERN = /^[0-9a-f]{32}$/i;
/** RSA-OAEP and AES-KW take no associated data: the wrap carries the header's digest instead. */
const AAD_DIGEST_BYTES = 32;
/** A bound on listing pages (25 versions each), so a runaway listing cannot loop forever. */
const MAX_VERSION_PAGES = 400;

interface Opened {
  readonly agent: Agent;
  readonly credential: TokenCredential;
  readonly keys: KeyClient;
}

/** What every Key Vault operation accepts: the attempt's deadline and timeout. */
type OperationOptions = Pick<WrapKeyOptions, 'abortSignal' | 'requestOptions'>;

/** A key operation, as an access policy permission and as RBAC data actions. */
interface Permission {
  readonly accessPolicy: string;
  readonly vaultAction: string;
  readonly hsmAction: string;
}
const READ: Permission = { accessPolicy: 'get', vaultAction: 'read', hsmAction: 'read/action' };
const LIST: Permission = { accessPolicy: 'list', vaultAction: 'read', hsmAction: 'read/action' };
const CREATE: Permission = {
  accessPolicy: 'create',
  vaultAction: 'create/action',
  hsmAction: 'write/action',
};
const WRAP: Permission = { accessPolicy: 'wrapKey', vaultAction: 'wrap/action', hsmAction: 'wrap/action' };
const UNWRAP: Permission = {
  accessPolicy: 'unwrapKey',
  vaultAction: 'unwrap/action',
  hsmAction: 'unwrap/action',
};

export class AzureKeyVaultBackend implements KekBackend {
  readonly type = 'azure-keyvault';
  readonly autoCreateOption = 'createIfMissing';
  readonly name: string;
  readonly mechanism: KeyWrapAlgorithm;
  readonly autoCreate: boolean;
  readonly externalRotation: ExternalRotation;
  readonly #config: AzureKeyVaultBackendConfig;
  readonly #readSecret: SecretReader;
  readonly #readFile: FileReader;
  readonly #logger: Logger;
  readonly #caller: RemoteCaller;
  readonly #managedHsm: boolean;
  readonly #keyUrl: string;
  /** Set by open(): connections, the credential, and the client for key reads and creation. */
  #opened: Opened | undefined;
  /** One client per pinned version: each sends its operations straight to that version. */
  readonly #crypto = new Map<string, CryptographyClient>();

  constructor(config: AzureKeyVaultBackendConfig, deps: BackendDeps) {
    this.#config = config;
    this.name = config.name;
    this.mechanism = config.algorithm;
    this.autoCreate = config.createIfMissing;
    this.#readSecret = deps.readSecret;
    this.#readFile = deps.readFile;
    this.#logger = deps.logger.child({ backend: config.name });
    this.#managedHsm = /\.managedhsm\./i.test(config.vaultUrl) || config.algorithm === 'A256KW';
    this.#keyUrl = `${config.vaultUrl}/keys/${config.keyName}`;
    this.#caller = createRemoteCaller({
      backend: config.name,
      service: 'Azure Key Vault',
      maxConcurrency: config.maxConcurrency,
      requestTimeoutMs: config.requestTimeoutMs,
      failures: azureFailures,
    });
    this.externalRotation = {
      intervalMs: config.rotationPoll.intervalMs,
      stableForMs: config.rotationPoll.stableForMs,
      latest: deadline => this.#current(deadline),
    };
  }

  open(): Promise<void> {
    // One keep-alive pool for the vault and Entra ID; the CA is trusted by this client only.
    const agent = new Agent({
      keepAlive: true,
      maxSockets: this.#config.maxConcurrency,
      ...(this.#config.tls?.caFile !== undefined && { ca: this.#readCa(this.#config.tls.caFile) }),
    });
    // Secret files are read here, so a missing one fails start-up with its own error.
    const credential = createAzureCredential(this.#config.credential, {
      readSecret: this.#readSecret,
      backend: this.name,
      agent,
    });
    this.#opened = {
      agent,
      credential,
      keys: new KeyClient(this.#config.vaultUrl, credential, clientOptions(this.#config, agent)),
    };
    return Promise.resolve();
  }

  /** Every version, oldest first, with the one the vault calls current last. */
  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    const { keys } = this.#client();
    const listed = await unlessMissing(
      this.#call(deadline, LIST, async options => {
        const all: KeyProperties[] = [];
        let pages = 0;
        for await (const page of keys.listPropertiesOfKeyVersions(this.#config.keyName, options).byPage()) {
          all.push(...page);
          if (++pages >= MAX_VERSION_PAGES) break;
        }
        return all;
      }),
    );
    if (listed === undefined) return [];
    const current = await unlessMissing(this.#current(deadline));
    if (current === undefined) return [];
    // Creation times have whole-second resolution: the vault's own choice settles ties.
    return listed
      .filter(properties => properties.version !== undefined && VERSION_PATTERN.test(properties.version))
      .map(properties => this.#info(properties))
      .filter(info => info.version !== current.version)
      .sort((a, b) => (a.createdAt ?? '').localeCompare(b.createdAt ?? ''))
      .concat(current);
  }

  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    const { keys } = this.#client();
    const { keyName, algorithm, rsaKeySize, hsm } = this.#config;
    const keyOps = ['wrapKey' as const, 'unwrapKey' as const];
    const created = await this.#call(deadline, CREATE, options =>
      algorithm === 'A256KW'
        ? keys.createOctKey(keyName, { ...options, hsm: true, keySize: 256, keyOps })
        : keys.createRsaKey(keyName, { ...options, hsm, keySize: rsaKeySize, keyOps }),
    );
    const info = this.#info(created.properties);
    this.#logger.info({ version: info.version }, 'new Key Vault key version');
    return info;
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    const client = this.#cryptoFor(request.keyVersion);
    const payload = Buffer.concat([request.plaintext, digest(request.aad)]);
    const wrapped = await this.#call(request.deadline, WRAP, options =>
      client.wrapKey(this.mechanism, payload, options),
    );
    return Buffer.from(wrapped.result);
  }

  async unwrap(request: UnwrapRequest): Promise<Buffer> {
    if (request.mechanism !== 'RSA-OAEP-256' && request.mechanism !== 'A256KW') {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name}: the envelope names mechanism ${request.mechanism}, which Key Vault does not unwrap`,
      );
    }
    const algorithm = request.mechanism;
    const client = this.#cryptoFor(request.keyVersion);
    const unwrapped = await this.#call(request.deadline, UNWRAP, options =>
      client.unwrapKey(algorithm, request.wrapped, options),
    ).catch((error: unknown) => {
      // Key Vault answers 400 to a wrapped key it cannot open.
      if (error instanceof BrokerError && error.code === 'BACKEND_REJECTED') throw this.#invalidCiphertext();
      throw error;
    });
    const payload = Buffer.from(unwrapped.result);
    const plaintext = payload.subarray(0, payload.length - AAD_DIGEST_BYTES);
    const bound = payload.subarray(payload.length - AAD_DIGEST_BYTES);
    // The digest proves the wrap was made for this very envelope header.
    if (plaintext.length === 0 || !timingSafeEqual(bound, digest(request.aad)))
      throw this.#invalidCiphertext();
    return Buffer.from(plaintext);
  }

  /** One key read: reachability, a valid credential, the get permission and the key's presence. */
  async probe(deadline: Deadline): Promise<void> {
    await this.#current(deadline);
  }

  close(): Promise<void> {
    this.#crypto.clear();
    this.#opened?.agent.destroy();
    this.#opened = undefined;
    return Promise.resolve();
  }

  /** The version the vault itself calls current. */
  async #current(deadline: Deadline): Promise<KeyVersionInfo> {
    const { keys } = this.#client();
    const key = await this.#call(deadline, READ, options => keys.getKey(this.#config.keyName, options));
    return this.#info(key.properties);
  }

  #client(): Opened {
    if (this.#opened === undefined) throw new BrokerError('INTERNAL', `backend ${this.name} is not open`);
    return this.#opened;
  }

  #cryptoFor(version: string): CryptographyClient {
    if (!VERSION_PATTERN.test(version)) {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name}: ${JSON.stringify(version.slice(0, 40))} is not a Key Vault key version`,
      );
    }
    let client = this.#crypto.get(version);
    if (client === undefined) {
      const { vaultUrl, keyName: name } = this.#config;
      const id = `${this.#keyUrl}/${version}`;
      // A key without key material: the client then has no local provider and no reason to
      // GET the key first, so every operation is the one remote call it names.
      const key: KeyVaultKey = { name, id, properties: { id, name, vaultUrl, version } };
      const { credential, agent } = this.#client();
      client = new CryptographyClient(key, credential, clientOptions(this.#config, agent));
      this.#crypto.set(version, client);
    }
    return client;
  }

  #readCa(path: string): Buffer {
    try {
      return this.#readFile(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      throw new BrokerError(
        'CONFIG_INVALID',
        `backend ${this.name}: cannot read tls.caFile ${path} (${code})`,
      );
    }
  }

  /** Runs one Key Vault operation under the call policy; failures leave as broker errors. */
  #call<T>(
    deadline: Deadline,
    permission: Permission,
    operation: (options: OperationOptions) => Promise<T>,
  ): Promise<T> {
    const action = `Microsoft.KeyVault/${this.#managedHsm ? `managedHsm/keys/${permission.hsmAction}` : `vaults/keys/${permission.vaultAction}`}`;
    const need: Need = {
      permission: `keys/${permission.accessPolicy} (RBAC data action ${action}) on ${this.#keyUrl}`,
      refine: failure => this.#refine(failure),
    };
    return this.#caller.call(deadline, need, (abortSignal, timeout) =>
      operation({ abortSignal, requestOptions: { timeout } }),
    );
  }

  /** What a refused credential or a missing key means here: the settings and names to check. */
  #refine(failure: BackendCallError): BrokerError | undefined {
    if (failure.kind === 'auth') {
      return new BrokerError(
        'BACKEND_AUTH_FAILED',
        `backend ${this.name}: no Key Vault access with the ${this.#config.credential.type} credential (${failure.cause}); check the credential settings and the files they name`,
        failure.cause,
      );
    }
    if (failure.kind === 'not-found') {
      return new BrokerError(
        'KEY_MISSING',
        `backend ${this.name}: Key Vault has no key (or key version) ${this.#config.keyName} in ${this.#config.vaultUrl}`,
        failure.cause,
      );
    }
    return undefined;
  }

  #invalidCiphertext(): BrokerError {
    return new BrokerError(
      'INVALID_CIPHERTEXT',
      `backend ${this.name}: Key Vault could not unwrap the key for this envelope (tampered, or from another key or envelope)`,
    );
  }

  /** Identity of one version: vault, key, version id and creation time (a recreated key differs). */
  #info(properties: KeyProperties): KeyVersionInfo {
    const version = properties.version ?? '';
    const created = properties.createdOn;
    const host = new URL(this.#config.vaultUrl).host;
    return {
      version,
      fingerprint: `azure-keyvault:${host}/${this.#config.keyName}/${version}:${created === undefined ? '' : created.getTime() / 1000}`,
      createdAt: created?.toISOString(),
    };
  }
}

/** Fresh options per client: the SDK writes into the object it is given. */
function clientOptions(config: AzureKeyVaultBackendConfig, agent: Agent) {
  return {
    agent,
    // Retries are the call policy's, inside each call's deadline.
    retryOptions: { maxRetries: 0 },
    disableChallengeResourceVerification: !config.verifyChallengeResource,
    // The SDK's type lists the versions it knows; the schema also admits later ones.
    ...(config.apiVersion !== undefined && { serviceVersion: config.apiVersion as '7.6' }),
  };
}

function digest(aad: Buffer): Buffer {
  return createHash('sha256').update(aad).digest();
}
