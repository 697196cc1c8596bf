import type { ClientRegistry, Lease, Transport } from "../cluster/registry.js";
import { CLIENT_ID_PATTERN } from "../domain/names.js";
import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";
import type { Metrics } from "../metrics.js";
import type { TokenVerifier } from "./client-auth.js";
import type { PenaltyBox } from "./penalty.js";

export type Admission = { ok: true; lease: Lease } | { ok: false; error: ServiceError };

export interface AdmissionDeps {
  drain: DrainState;
  registry: ClientRegistry;
  metrics: Metrics;
  penalties: PenaltyBox;
  /** Set when client tokens are required. */
  verifyToken: TokenVerifier | undefined;
}

/**
 * Whether a new client may join, for Socket.IO and /ws alike: not while
 * draining, nor from an address in the penalty box; the clientId it asks for (its token's subject when tokens are
 * required, a new `anon-…` when it asks for none) must be valid and free on
 * every instance. Answers the lease or a coded refusal (counted), never
 * throws for anything the client sent. Whoever gets a lease releases it when
 * the connection ends, or at once if it never opens.
 */
export async function admit(deps: AdmissionDeps, request: { transport: Transport; address: string; wanted: unknown; token: unknown }): Promise<Admission> {
  const refuse = (error: ServiceError): Admission => {
    deps.metrics.refusals.inc({ code: error.code });
    return { ok: false, error };
  };
  const { drain, registry, verifyToken } = deps;
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
  let id = wanted as string | undefined;
  if (verifyToken) {
    let subject: string;
    try {
      subject = await verifyToken(request.token);
    } catch (err) {
      if (err instanceof ServiceError) return refuse(err);
      throw err;
    }
    if (id !== undefined && id !== subject) return refuse(new ServiceError("UNAUTHORIZED", "clientId does not match the client token"));
    id = subject;
  }
  id ??= registry.newId();
  const lease = await registry.claim(id, request.transport);
  if (!lease) return refuse(new ServiceError("DUPLICATE_CLIENT_ID", id));
  // A drain may have begun while we awaited Redis.
  if (drain.draining) {
    registry.release(lease);
    return refuse(new ServiceError("DRAINING"));
  }
  return { ok: true, lease };
}
