import { type CryptoKey, type KeyObject, errors, importSPKI, jwtVerify } from "jose";
import type { JwtConfig } from "../config.js";
import { CLIENT_ID_PATTERN } from "../domain/names.js";
import { ServiceError } from "../errors.js";

/** Answers the clientId a client token proves (its `sub`), or throws UNAUTHORIZED. */
export type TokenVerifier = (token: unknown) => Promise<string>;

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
    let sub: unknown;
    try {
      ({ sub } = (await jwtVerify(token, key, options)).payload);
    } catch (err) {
      const why = err instanceof errors.JWTExpired ? "client token expired" : "client token is not valid";
      throw new ServiceError("UNAUTHORIZED", why);
    }
    if (typeof sub !== "string" || !CLIENT_ID_PATTERN.test(sub)) {
      throw new ServiceError("UNAUTHORIZED", "client token subject is not a valid clientId");
    }
    return sub;
  };
}
