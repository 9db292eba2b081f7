import { type Action, type JwtVerifier, type Policy, type Principal, UnauthorizedError } from '@agentbus/core';

/** Who an unauthenticated caller is when the gateway runs without auth (development only). */
export const ANONYMOUS: Principal = Object.freeze({ subject: 'anonymous', roles: [] as string[] });

/** How the gateway authenticates callers and authorizes what they do. */
export interface GatewayAuthOptions {
  /** Verifies bearer tokens (HTTP `Authorization: Bearer …`, WebSocket `?token=` or an `auth` frame). */
  readonly verifier: JwtVerifier;
  /** Topic permissions; absent: any authenticated caller may do anything. */
  readonly policy?: Policy;
}

/** An authenticated caller: the principal plus when its token stops being valid. */
export interface Caller {
  readonly principal: Principal;
  /** Epoch ms of the token's `exp` (undefined without auth). */
  readonly expiresAtMs?: number | undefined;
  /** The raw token (kept to re-check revocation); undefined without auth. */
  readonly token?: string | undefined;
}

/**
 * Authentication and authorization as the gateway applies them to HTTP requests and WebSocket
 * frames. Without options every caller is {@link ANONYMOUS} and everything is allowed: the
 * gateway then logs a warning at start, since anyone who reaches the port may publish.
 */
export class GatewayAuth {
  readonly #options: GatewayAuthOptions | undefined;
  readonly #revoked = new Set<string>();

  constructor(options?: GatewayAuthOptions) {
    this.#options = options;
  }

  get enabled(): boolean {
    return this.#options !== undefined;
  }

  /**
   * The caller a bearer token names. With auth on, a missing, invalid, expired or revoked token is
   * an UnauthorizedError (`data.reason`); with auth off the token is ignored.
   */
  async authenticate(token: string | undefined): Promise<Caller> {
    if (!this.#options) return { principal: ANONYMOUS };
    if (token === undefined || token === '')
      throw new UnauthorizedError('a bearer token is required', { data: { reason: 'missing-token' } });
    const identity = await this.#options.verifier.verify(token);
    if (this.isRevoked(identity.subject, identity.claims.jti))
      throw new UnauthorizedError('the token was revoked', { data: { reason: 'revoked' } });
    const exp = identity.claims.exp;
    return {
      principal: identity,
      expiresAtMs: typeof exp === 'number' ? exp * 1000 : undefined,
      token,
    };
  }

  /** Throws ForbiddenError (naming the missing permission) unless `caller` may do `action` on `target`. */
  authorize(caller: Caller | undefined, action: Action, target: string): void {
    // Fails closed: a route reached without a caller is a bug, never an open door.
    if (caller === undefined) throw notAuthenticated();
    this.#options?.policy?.assert(caller.principal, action, target);
  }

  /** Whether `caller` may do `action` on `target` (false for a target that is no topic or pattern). */
  allows(caller: Caller | undefined, action: Action, target: string): boolean {
    if (caller === undefined) return false;
    const policy = this.#options?.policy;
    if (policy === undefined) return true;
    try {
      return policy.check(caller.principal, action, target);
    } catch {
      return false;
    }
  }

  /**
   * Revokes every token of `subject` (or only the one with id `jti`): HTTP requests are refused
   * from now on and open WebSockets of that caller are closed within a second.
   */
  revoke(subject: string, jti?: string): void {
    this.#revoked.add(jti === undefined ? `sub:${subject}` : `jti:${jti}`);
  }

  isRevoked(subject: string, jti: unknown): boolean {
    if (this.#revoked.size === 0) return false;
    return this.#revoked.has(`sub:${subject}`) || (typeof jti === 'string' && this.#revoked.has(`jti:${jti}`));
  }
}

/** The bearer token of an `Authorization` header value, if it has one. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/** The error for a request that reached a route without an authenticated caller. */
export function notAuthenticated(): UnauthorizedError {
  return new UnauthorizedError('not authenticated', { data: { reason: 'missing-token' } });
}
