import { type CryptoKey, type KeyObject, errors, importSPKI, jwtVerify } from "jose";
import type { JwtConfig } from "../config.js";
import { CLIENT_ID_PATTERN } from "../domain/names.js";
import { type Grants, parseGrants } from "../domain/permissions.js";
import { ServiceError } from "../errors.js";

/** What a valid client token says: its user, what it may do, and until when (ms since the epoch; undefined: no `exp`). */
export interface TokenClaims {
  user: string;
  grants: Grants;
  expiresAt: number | undefined;
}

/** Answers what a client token proves, or throws UNAUTHORIZED (TOKEN_EXPIRED once its `exp` has passed). */
export type TokenVerifier = (token: unknown) => Promise<TokenClaims>;

/**
 * Optional client authentication: a JWT signed with AUTH_JWT_SECRET (HS*) or
 * the private half of AUTH_JWT_PUBLIC_KEY. The key is imported once here, so
 * a bad PEM stops the start-up instead of refusing every client later.
 */
export async function createTokenVerifier(auth: JwtConfig | undefined): Promise<TokenVerifier | undefined> {
  if (!auth) return undefined;
  let key: CryptoKey | KeyObject | Uint8Array;
  try {
    key = auth.key.kind === "secret" ? new TextEncoder().encode(auth.key.secret) : await importSPKI(auth.key.pem, auth.algorithm);
  } catch (err) {
    throw new Error(`AUTH_JWT_PUBLIC_KEY is not a PEM public key for ${auth.algorithm}: ${(err as Error).message}`);
  }
  const options = {
    algorithms: [auth.algorithm],
    ...(auth.issuer ? { issuer: auth.issuer } : {}),
    ...(auth.audience ? { audience: auth.audience } : {}),
  };
  return async (token) => {
    if (typeof token !== "string" || token === "") throw new ServiceError("UNAUTHORIZED", "a client token is required");
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, key, options));
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw new ServiceError("TOKEN_EXPIRED");
      throw new ServiceError("UNAUTHORIZED", "client token is not valid");
    }
    const { sub, exp } = payload;
    if (typeof sub !== "string" || !CLIENT_ID_PATTERN.test(sub)) {
      throw new ServiceError("UNAUTHORIZED", "client token subject is not a valid user id (1-64 characters of A-Z a-z 0-9 _ . -)");
    }
    const grants = parseGrants(payload.wbs);
    if (grants instanceof ServiceError) throw grants;
    return { user: sub, grants, expiresAt: typeof exp === "number" ? exp * 1000 : undefined };
  };
}
