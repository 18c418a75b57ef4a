// PKCS#11 HSM backend on graphene-pk11: the KekBackend over the token connection
// (hsm-connection.ts), the key objects of each version (key-versions.ts) and the wrap
// mechanisms (mechanisms/): the config's for new wraps, the recorded one for each unwrap.
import type { KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../kek.ts';
import type { Pkcs11BackendConfig } from './pkcs11-schema.ts';
import type { SecretReader } from '../../secrets.ts';
import type { Logger } from '../../log.ts';
import type { Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import { HsmConnection } from './hsm-connection.ts';
import { KeyVersions } from './key-versions.ts';
import { chooseMechanisms, type MechanismChoice } from './mechanisms/catalog.ts';
import type { Pkcs11Mechanism } from './mechanisms/mechanism.ts';
import { assertOffered } from './mechanisms/offered.ts';

const DEFAULT_RSA_BITS = 3072;

export class Pkcs11Backend implements KekBackend {
  readonly type = 'pkcs11';
  readonly mechanism: string;
  readonly autoCreateOption = 'generateIfMissing';
  readonly name: string;
  readonly autoCreate: boolean;
  readonly #hsm: HsmConnection;
  readonly #versions: KeyVersions;
  readonly #mechanisms: MechanismChoice;

  constructor(config: Pkcs11BackendConfig, deps: { readSecret: SecretReader; logger: Logger }) {
    this.name = config.name;
    this.autoCreate = config.generateIfMissing;
    this.#mechanisms = chooseMechanisms(config);
    this.mechanism = this.#mechanisms.write.name;
    const logger = deps.logger.child({ backend: config.name });
    this.#hsm = new HsmConnection(config, {
      readSecret: deps.readSecret,
      logger,
      onRecover: () => this.#versions.forget(),
      checkToken: slot => assertOffered(slot, this.#mechanisms.write, this.name),
    });
    this.#versions = new KeyVersions({
      keyLabel: config.keyLabel,
      backendName: config.name,
      writeMechanism: this.#mechanisms.write,
      rsaBits: config.rsaBits ?? DEFAULT_RSA_BITS,
      logger,
      tokenSerial: () => this.#hsm.tokenSerial,
      assertTokenUsable: () => this.#hsm.assertUsable(),
    });
  }

  /** Connects, and refuses a token that does not offer the configured mechanism at all. */
  open(): Promise<void> {
    return new Promise(resolve => {
      this.#hsm.open();
      resolve();
    });
  }

  listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    return this.#hsm.withAnchor(deadline, anchor => Promise.resolve(this.#versions.list(anchor)));
  }

  createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    return this.#hsm.withAnchor(deadline, anchor => this.#versions.create(anchor));
  }

  wrap(request: WrapRequest): Promise<Buffer> {
    const mechanism = this.#mechanisms.write;
    return this.#hsm.withSession(request.deadline, 'wrap', lane => {
      const key = this.#versions.keyFor(lane.session, request.keyVersion, mechanism, 'seal');
      return mechanism.seal(lane, key, request.plaintext, request.aad);
    });
  }

  unwrap(request: UnwrapRequest): Promise<Buffer> {
    const mechanism = this.#readable(request);
    if (mechanism instanceof BrokerError) return Promise.reject(mechanism);
    return this.#hsm.withSession(request.deadline, 'unwrap', lane => {
      const key = this.#versions.keyFor(lane.session, request.keyVersion, mechanism, 'open');
      return mechanism.open(lane, key, request.wrapped, request.aad);
    });
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

  /** The mechanism a wrap names, checked before any HSM session is taken. */
  #readable(request: UnwrapRequest): Pkcs11Mechanism | BrokerError {
    const mechanism = this.#mechanisms.read(request.mechanism);
    if (mechanism === undefined) {
      return new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${this.name} cannot unwrap mechanism '${request.mechanism}'`,
      );
    }
    if (request.wrapped.length < mechanism.minWrappedBytes)
      return new BrokerError('INVALID_CIPHERTEXT', 'the wrapped key is too short');
    return mechanism;
  }
}
