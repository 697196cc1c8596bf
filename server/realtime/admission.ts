import type { ClientRegistry, Transport } from "../cluster/registry.js";
import type { UserBlocks } from "../cluster/user-blocks.js";
import type { UserSessions } from "../cluster/user-sessions.js";
import { CLIENT_ID_PATTERN } from "../domain/names.js";
import { Permissions } from "../domain/permissions.js";
import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";
import type { Metrics } from "../metrics.js";
import type { TokenClaims, TokenVerifier } from "./client-auth.js";
import type { Admitted } from "./connection.js";
import type { PenaltyBox } from "./penalty.js";

export type Admission = { ok: true; admitted: Admitted } | { ok: false; error: ServiceError };

export interface AdmissionDeps {
  drain: DrainState;
  registry: ClientRegistry;
  users: UserSessions;
  blocks: UserBlocks;
  metrics: Metrics;
  penalties: PenaltyBox;
  /** Set when client tokens are required. */
  verifyToken: TokenVerifier | undefined;
}

/**
 * Whether a new connection may open, for Socket.IO and /ws alike: not while
 * draining, nor from an address in the penalty box; with tokens, a valid
 * token of a user who is not blocked and holds fewer than the per-user cap;
 * the clientId it asks for (a new `anon-…` when none) must be valid and free
 * on every instance. Answers what it took, or a coded refusal (counted),
 * never throws for anything the client sent. Whoever gets it ends it with
 * Connection.end, or gives it back with `giveBack` if it never opens.
 */
export async function admit(deps: AdmissionDeps, request: { transport: Transport; address: string; wanted: unknown; token: unknown }): Promise<Admission> {
  const refuse = (error: ServiceError): Admission => {
    deps.metrics.refusals.inc({ code: error.code });
    return { ok: false, error };
  };
  const { drain, registry, verifyToken, users, blocks } = deps;
  const { wanted } = request;
  if (drain.draining) return refuse(new ServiceError("DRAINING"));
  const penalty = deps.penalties.remainingSec(request.address);
  if (penalty > 0) return refuse(new ServiceError("RATE_LIMITED", `this address was cut for flooding; try again in ${penalty} s`));
  if (wanted !== undefined && (typeof wanted !== "string" || !CLIENT_ID_PATTERN.test(wanted))) {
    // Not String(wanted): an object whose toString is not a function throws there.
    return refuse(
      new ServiceError("INVALID_CLIENT_ID", typeof wanted === "string" ? wanted.slice(0, 80) : (JSON.stringify(wanted) ?? typeof wanted).slice(0, 80)),
    );
  }
  let claims: TokenClaims | undefined;
  if (verifyToken) {
    try {
      claims = await verifyToken(request.token);
    } catch (err) {
      if (err instanceof ServiceError) return refuse(err);
      throw err;
    }
    const blocked = blocks.remainingMs(claims.user);
    if (blocked > 0) return refuse(new ServiceError("BLOCKED", `this user is blocked for ${Math.ceil(blocked / 1000)} s more`));
  }
  const lease = await registry.claim((wanted as string | undefined) ?? registry.newId(), request.transport);
  if (!lease) return refuse(new ServiceError("DUPLICATE_CLIENT_ID", wanted as string));
  // Without tokens every connection is its own user: no cap to keep.
  const user = claims?.user ?? lease.id;
  const userLease = claims ? await users.claim(user) : "none";
  if (userLease === undefined) {
    registry.release(lease);
    return refuse(new ServiceError("TOO_MANY_CONNECTIONS", String(users.cap)));
  }
  const admitted: Admitted = {
    lease,
    permissions: new Permissions(user, claims?.grants),
    expiresAt: claims?.expiresAt,
    userLease: userLease === "none" ? undefined : userLease,
  };
  // A drain may have begun while we awaited Redis.
  if (drain.draining) {
    giveBack(deps, admitted);
    return refuse(new ServiceError("DRAINING"));
  }
  return { ok: true, admitted };
}

/** Gives back what admission took, for a connection that never opened. */
export function giveBack(deps: Pick<AdmissionDeps, "registry" | "users">, admitted: Admitted): void {
  deps.registry.release(admitted.lease);
  if (admitted.userLease) deps.users.release(admitted.permissions.user, admitted.userLease);
}
