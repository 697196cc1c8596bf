import { exportSPKI, generateKeyPair, type JWTPayload, SignJWT, UnsecuredJWT } from "jose";

/** A key jose signs with: the bytes of an HMAC secret, or a private key. */
export type SigningKey = Parameters<SignJWT["sign"]>[0];

/** The UTF-8 bytes of an HS256 secret, as the server reads AUTH_JWT_SECRET. */
export const hmacKey = (secret: string): Uint8Array => new TextEncoder().encode(secret);

/**
 * A signed JWT with `claims`; `iat` is now and `exp` five minutes on unless
 * `claims` sets them (`exp: undefined` leaves it out).
 */
export function signJwt(key: SigningKey, alg: string, claims: JWTPayload = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = { iat: now, exp: now + 300, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return new SignJWT(payload).setProtectedHeader({ alg, typ: "JWT" }).sign(key);
}

/** An `alg: "none"` token: well-formed, unsigned. A verifier must refuse it. */
export function unsignedJwt(claims: JWTPayload): string {
  return new UnsecuredJWT(claims).setIssuedAt().setExpirationTime("5m").encode();
}

/** A fresh key pair: the private key to sign with and the public key as PEM SPKI (AUTH_JWT_PUBLIC_KEY). */
export async function jwtKeyPair(alg: "ES256" | "RS256"): Promise<{ privateKey: SigningKey; publicPem: string }> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { privateKey, publicPem: await exportSPKI(publicKey) };
}
