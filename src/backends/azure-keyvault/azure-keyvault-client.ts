// The Key Vault client as the broker uses it: one keep-alive pool for the vault and Entra ID,
// the credential, a KeyClient for key reads and creation, one CryptographyClient per pinned
// version, and every operation run under the shared call policy, a failure naming the
// permission the operation needs and the settings to check.
import { Agent } from 'node:https';
import type { TokenCredential } from '@azure/identity';
import { CryptographyClient, KeyClient, type KeyVaultKey, type WrapKeyOptions } from '@azure/keyvault-keys';
import type { AzureKeyVaultBackendConfig } from './azure-keyvault-schema.ts';
import type { Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { BackendDeps } from '../backend-kind.ts';
import type { BackendCallError } from '../call-policy.ts';
import { createRemoteCaller, type Need } from '../remote-caller.ts';
import { createAzureCredential } from './azure-credential.ts';
import { azureFailures } from './azure-errors.ts';

/** Key Vault's version ids are 32 hex digits; anything else never reaches a URL. */
export const VERSION_PATTERN = /^[0-9a-f]{32}$/i;

/** What every Key Vault operation accepts: the attempt's deadline and timeout. */
export type OperationOptions = Pick<WrapKeyOptions, 'abortSignal' | 'requestOptions'>;

/** A key operation, as an access policy permission and as RBAC data actions. */
export interface Permission {
  readonly accessPolicy: string;
  readonly vaultAction: string;
  readonly hsmAction: string;
}
export const READ: Permission = { accessPolicy: 'get', vaultAction: 'read', hsmAction: 'read/action' };
export const LIST: Permission = { accessPolicy: 'list', vaultAction: 'read', hsmAction: 'read/action' };
export const CREATE: Permission = {
  accessPolicy: 'create',
  vaultAction: 'create/action',
  hsmAction: 'write/action',
};
export const WRAP: Permission = {
  accessPolicy: 'wrapKey',
  vaultAction: 'wrap/action',
  hsmAction: 'wrap/action',
};
export const UNWRAP: Permission = {
  accessPolicy: 'unwrapKey',
  vaultAction: 'unwrap/action',
  hsmAction: 'unwrap/action',
};

export interface KeyVault {
  /** Connects; the CA and the credential's secret files are read here, so that start-up fails. */
  open(): void;
  /** The client for key reads, listing and creation. */
  keys(): KeyClient;
  /** The client pinned to `version`: each of its operations goes straight to that version. */
  crypto(version: string): CryptographyClient;
  /** Runs one Key Vault operation under the call policy; failures leave as broker errors. */
  call<T>(
    deadline: Deadline,
    permission: Permission,
    operation: (options: OperationOptions) => Promise<T>,
  ): Promise<T>;
  close(): void;
}

interface Opened {
  readonly agent: Agent;
  readonly credential: TokenCredential;
  readonly keys: KeyClient;
}

export function createKeyVault(
  config: AzureKeyVaultBackendConfig,
  deps: Pick<BackendDeps, 'readSecret' | 'readFile'>,
): KeyVault {
  const backend = config.name;
  const managedHsm = /\.managedhsm\./i.test(config.vaultUrl) || config.algorithm === 'A256KW';
  const keyUrl = `${config.vaultUrl}/keys/${config.keyName}`;
  const caller = createRemoteCaller({
    backend,
    service: 'Azure Key Vault',
    maxConcurrency: config.maxConcurrency,
    requestTimeoutMs: config.requestTimeoutMs,
    failures: azureFailures,
  });
  /** Set by open(): connections, the credential, and the client for key reads and creation. */
  let opened: Opened | undefined;
  /** One client per pinned version. */
  const crypto = new Map<string, CryptographyClient>();

  const client = (): Opened => {
    if (opened === undefined) throw new BrokerError('INTERNAL', `backend ${backend} is not open`);
    return opened;
  };

  const readCa = (path: string): Buffer => {
    try {
      return deps.readFile(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      throw new BrokerError('CONFIG_INVALID', `backend ${backend}: cannot read tls.caFile ${path} (${code})`);
    }
  };

  /** What a refused credential or a missing key means here: the settings and names to check. */
  const refine = (failure: BackendCallError): BrokerError | undefined => {
    if (failure.kind === 'auth') {
      return new BrokerError(
        'BACKEND_AUTH_FAILED',
        `backend ${backend}: no Key Vault access with the ${config.credential.type} credential (${failure.cause}); check the credential settings and the files they name`,
        failure.cause,
      );
    }
    if (failure.kind === 'not-found') {
      return new BrokerError(
        'KEY_MISSING',
        `backend ${backend}: Key Vault has no key (or key version) ${config.keyName} in ${config.vaultUrl}`,
        failure.cause,
      );
    }
    return undefined;
  };

  return {
    open() {
      // One keep-alive pool for the vault and Entra ID; the CA is trusted by this client only.
      const agent = new Agent({
        keepAlive: true,
        maxSockets: config.maxConcurrency,
        ...(config.tls?.caFile !== undefined && { ca: readCa(config.tls.caFile) }),
      });
      // Secret files are read here, so a missing one fails start-up with its own error.
      const credential = createAzureCredential(config.credential, {
        readSecret: deps.readSecret,
        backend,
        agent,
      });
      opened = {
        agent,
        credential,
        keys: new KeyClient(config.vaultUrl, credential, clientOptions(config, agent)),
      };
    },

    keys: () => client().keys,

    crypto(version) {
      if (!VERSION_PATTERN.test(version)) {
        throw new BrokerError(
          'INVALID_CIPHERTEXT',
          `backend ${backend}: ${JSON.stringify(version.slice(0, 40))} is not a Key Vault key version`,
        );
      }
      let pinned = crypto.get(version);
      if (pinned === undefined) {
        const { vaultUrl, keyName: name } = config;
        const id = `${keyUrl}/${version}`;
        // A key without key material: the client then has no local provider and no reason to
        // GET the key first, so every operation is the one remote call it names.
        const key: KeyVaultKey = { name, id, properties: { id, name, vaultUrl, version } };
        const { credential, agent } = client();
        pinned = new CryptographyClient(key, credential, clientOptions(config, agent));
        crypto.set(version, pinned);
      }
      return pinned;
    },

    call(deadline, permission, operation) {
      const action = `Microsoft.KeyVault/${managedHsm ? `managedHsm/keys/${permission.hsmAction}` : `vaults/keys/${permission.vaultAction}`}`;
      const need: Need = {
        permission: `keys/${permission.accessPolicy} (RBAC data action ${action}) on ${keyUrl}`,
        refine,
      };
      return caller.call(deadline, need, (abortSignal, timeout) =>
        operation({ abortSignal, requestOptions: { timeout } }),
      );
    },

    close() {
      crypto.clear();
      opened?.agent.destroy();
      opened = undefined;
    },
  };
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
