// PKCS#11 HSM backend on graphene-pk11: the KekBackend over the token connection
// (hsm-connection.ts), the key objects of each version (key-versions.ts) and the AES-GCM
// wrap (aes-gcm.ts).
import type { KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import type { Pkcs11BackendConfig } from './pkcs11-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import type { Logger } from '../../log.ts';
import type { Deadline } from '../../deadline.ts';
import { HsmConnection } from './hsm-connection.ts';
import { KeyVersions } from './key-versions.ts';
import { AES_GCM_MECHANISM, invalidWrapped, openAesGcm, sealAesGcm } from './aes-gcm.ts';

export class Pkcs11Backend implements KekBackend {
  readonly type = 'pkcs11';
  readonly mechanism = AES_GCM_MECHANISM;
  readonly autoCreateOption = 'generateIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly #hsm: HsmConnection;
  readonly #versions: KeyVersions;

  constructor(config: Pkcs11BackendConfig, deps: { readSecret: SecretReader; logger: Logger }) {
    this.name = config.name;
    this.autoCreate = config.generateIfMissing;
    const logger = deps.logger.child({ backend: config.name });
    this.#hsm = new HsmConnection(config, {
      readSecret: deps.readSecret,
      logger,
      onRecover: () => this.#versions.forget(),
    });
    this.#versions = new KeyVersions({
      keyLabel: config.keyLabel,
      backendName: config.name,
      logger,
      tokenSerial: () => this.#hsm.tokenSerial,
      assertTokenUsable: () => this.#hsm.assertUsable(),
    });
  }

  async open(): Promise<void> {
    this.#hsm.open();
    return Promise.resolve();
  }

  listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    return this.#hsm.withAnchor(deadline, anchor => Promise.resolve(this.#versions.list(anchor)));
  }

  createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    return this.#hsm.withAnchor(deadline, anchor => Promise.resolve(this.#versions.create(anchor)));
  }

  wrap(request: WrapRequest): Promise<Buffer> {
    return this.#hsm.withSession(request.deadline, 'wrap', async session =>
      sealAesGcm(session, this.#versions.key(session, request.keyVersion), request.plaintext, request.aad),
    );
  }

  unwrap(request: UnwrapRequest): Promise<Buffer> {
    const invalid = invalidWrapped(request, this.name);
    if (invalid !== undefined) return Promise.reject(invalid);
    return this.#hsm.withSession(request.deadline, 'unwrap', async session =>
      openAesGcm(session, this.#versions.key(session, request.keyVersion), request.wrapped, request.aad),
    );
  }

  /**
   * C_GetTokenInfo and C_GetSessionInfo: no crypto, but they notice a lost token, login or
   * device, and a probe on a broken connection is what recovers it while no call arrives.
   */
  probe(deadline: Deadline): Promise<void> {
    return this.#hsm.probe(deadline);
  }

  async close(): Promise<void> {
    await this.#hsm.close();
    this.#versions.forget();
  }
}
