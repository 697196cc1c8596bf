import type { UserBlocks } from "../cluster/user-blocks.js";
import type { BroadcastDomain } from "../domain/broadcast.js";
import { ServiceError } from "../errors.js";
import type { ConnectionInfo } from "../protocol.js";
import type { ConnectionHub } from "./connection.js";

/**
 * Who is connected where, cluster-wide, for the admin API: every
 * connection, a user's connections, and cutting a user off (every instance
 * closes its own; a block keeps the user out for a while). Each instance
 * answers from its own hub over the cluster bus: no scan of Redis.
 */
export class ConnectionDirectory {
  constructor(
    private readonly hub: ConnectionHub,
    private readonly domain: BroadcastDomain,
    private readonly blocks: UserBlocks,
  ) {
    domain.answer("clients", () => hub.infos());
    domain.answer("user", (q) => (typeof q.user === "string" ? hub.infos(q.user) : []));
    domain.answer("disconnect", (q) => (typeof q.user === "string" ? hub.disconnectUser(q.user, disconnected(q.reason, q.code)) : 0));
  }

  /** Every connection, on every instance that answered. */
  async clients(): Promise<{ connections: ConnectionInfo[]; partial: boolean }> {
    const remote = await this.domain.ask<ConnectionInfo[]>({ name: "clients" });
    return { connections: [this.hub.infos(), ...remote.answers].flat(), partial: remote.partial };
  }

  async ofUser(user: string): Promise<{ connections: ConnectionInfo[]; partial: boolean }> {
    const remote = await this.domain.ask<ConnectionInfo[]>({ name: "user", user });
    return { connections: [this.hub.infos(user), ...remote.answers].flat(), partial: remote.partial };
  }

  /**
   * Closes every connection of `user` on every instance with `code` (a
   * WebSocket close code of 4000–4999; Socket.IO clients get it in `closing`)
   * and `reason`; with `blockMs`, first refuses its new connections that long.
   */
  async disconnect(
    user: string,
    opts: { reason?: string; code?: number; blockMs?: number },
  ): Promise<{ disconnected: number; partial: boolean; blockedUntil: string | null; blockStored: boolean }> {
    const block = opts.blockMs ? await this.blocks.block(user, opts.blockMs) : undefined;
    const local = this.hub.disconnectUser(user, disconnected(opts.reason, opts.code));
    const remote = await this.domain.ask<number>({
      name: "disconnect",
      user,
      ...(opts.reason ? { reason: opts.reason } : {}),
      ...(opts.code ? { code: opts.code } : {}),
    });
    return {
      disconnected: remote.answers.reduce((a, b) => a + (Number(b) || 0), local),
      partial: remote.partial,
      blockedUntil: block ? new Date(block.until).toISOString() : null,
      blockStored: block?.stored ?? false,
    };
  }

  /** Lifts a block at once, everywhere. */
  async unblock(user: string): Promise<void> {
    await this.blocks.block(user, 0);
  }
}

/** The close of an admin's disconnect: its reason and close code (4000 unless it names one of 4000–4999). */
const disconnected = (reason: unknown, code: unknown) =>
  new ServiceError(
    "DISCONNECTED",
    typeof reason === "string" && reason !== "" ? reason.slice(0, 100) : undefined,
    typeof code === "number" && Number.isInteger(code) && code >= 4000 && code <= 4999 ? code : undefined,
  );
