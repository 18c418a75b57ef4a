// How many pooled sessions a token can take. Small HSMs cap sessions per token (a YubiHSM 2
// has 16, shared by every application), and a pool sized from the config alone exhausts them:
// the next C_OpenSession fails with CKR_SESSION_COUNT under load, and so does the anchor's
// re-open after a recovery. The token states its cap in C_GetTokenInfo; the pool stays below it.
import type { Logger } from '../../log.ts';

/** PKCS#11 2.40 §3.2: ~0, a count the token does not state. */
export const CK_UNAVAILABLE_INFORMATION = 0xffff_ffff;

/** A session cap that is none: 0 (CK_EFFECTIVELY_INFINITE) or CK_UNAVAILABLE_INFORMATION. */
export const noCapStated = (count: number) => count <= 0 || count >= CK_UNAVAILABLE_INFORMATION;

export interface TokenSessionCaps {
  /** ulMaxSessionCount */
  readonly maxSessionCount: number;
  /** ulMaxRwSessionCount: the pool's sessions are read/write. */
  readonly maxRwSessionCount: number;
}

export interface PoolSizing {
  readonly size: number;
  /** The token's cap when it lowered the configured size; absent when the config stands. */
  readonly tokenCap?: number;
}

/**
 * The pool size for `configured` on a token with these caps. Kept back: the anchor session,
 * and a quarter of the cap (at least one) for what else uses the token beside this broker
 * (`hsm-probe`, the vendor's tools, a second broker during an upgrade). Never below one.
 */
export function poolSizeFor(configured: number, caps: TokenSessionCaps): PoolSizing {
  const stated = [caps.maxSessionCount, caps.maxRwSessionCount].filter(count => !noCapStated(count));
  if (stated.length === 0) return { size: configured };
  const cap = Math.min(...stated);
  const available = Math.max(1, cap - 1 - Math.max(1, Math.ceil(cap / 4)));
  return available < configured ? { size: available, tokenCap: cap } : { size: configured };
}

interface ResizablePool {
  readonly size: number;
  resize(size: number): void;
}

/** Sizes `pool` for the token (at each connect), and says so when the token's cap lowers it. */
export function fitPoolToToken(
  pool: ResizablePool,
  configured: number,
  caps: TokenSessionCaps,
  logger: Logger,
): void {
  const sizing = poolSizeFor(configured, caps);
  if (sizing.size !== pool.size && sizing.tokenCap !== undefined) {
    logger.warn(
      { configured, tokenCap: sizing.tokenCap, sessions: sizing.size },
      `the token allows ${sizing.tokenCap} sessions: the pool uses ${sizing.size} instead of the configured ${configured} (pkcs11 sessions), keeping the anchor session and a quarter of the cap free`,
    );
  }
  pool.resize(sizing.size);
}
