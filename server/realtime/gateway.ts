import type { ClientRegistry } from "../cluster/registry.js";
import type { UserBlocks } from "../cluster/user-blocks.js";
import type { UserSessions } from "../cluster/user-sessions.js";
import type { Config } from "../config.js";
import type { BroadcastDomain } from "../domain/broadcast.js";
import type { DrainState } from "../drain.js";
import type { ServiceError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { TokenVerifier } from "./client-auth.js";
import type { ConnectionHub } from "./connection.js";
import type { OriginPolicy } from "./origin.js";
import type { PenaltyBox } from "./penalty.js";
import type { ClientAddresses } from "./client-address.js";
import type { PublishLimits } from "./publish-limits.js";
import type { RateLimiter } from "./rate-limit.js";
import type { ReplayPolicy } from "./recovery.js";

/** What a gateway (Socket.IO, /ws) needs: the instance's config, state, policies and domain. */
export interface GatewayDeps {
  config: Config;
  log: Logger;
  drain: DrainState;
  registry: ClientRegistry;
  /** The per-user cap's leases, and the users refused for a while. */
  users: UserSessions;
  blocks: UserBlocks;
  /** This instance's connections, both transports. */
  hub: ConnectionHub;
  domain: BroadcastDomain;
  metrics: Metrics;
  origins: OriginPolicy;
  limiter: RateLimiter;
  penalties: PenaltyBox;
  /** Per address and per instance, on what clients publish. */
  publishLimits: PublishLimits;
  /** Who a request comes from (TRUST_PROXY). */
  addresses: ClientAddresses;
  /** What replays may spend. */
  replays: ReplayPolicy;
  /** Set when client tokens are required. */
  verifyToken: TokenVerifier | undefined;
  /** Why a new session is turned away before anything is taken (draining, full: 503, nginx tries another instance), if it is. */
  refuseNewSession(): ServiceError | undefined;
}
