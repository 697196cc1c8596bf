import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Logger } from "../logger.js";
import type { RedisConnection } from "./redis.js";
import { withTimeout } from "../timeout.js";

export type Transport = "socket.io" | "ws";

/** One clientId held by one connection of this instance. */
export interface Lease {
  readonly id: string;
  readonly transport: Transport;
  readonly token: string;
}

/**
 * `wbs:client:{NN}:<id>`: the hash tag is a bucket of the id (0..63), so on a
 * Redis Cluster one script can refresh all the ids of a bucket (every key of
 * a script must share a slot), and 64 buckets spread over the shards. A tag of
 * its own for every id would cost one command an id each heartbeat; one tag
 * for all would put every id on one shard.
 */
const BUCKETS = 64;
const bucketOf = (id: string): number => {
  let h = 0x811c9dc5; // FNV-1a: cheap, stable across instances and versions
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return (h >>> 0) % BUCKETS;
};
const keyIn = (bucket: number, id: string): string => `wbs:client:{${bucket}}:${id}`;
const KEY = (id: string): string => keyIn(bucketOf(id), id);

// Refresh our claims; re-create any that vanished (a Redis restart without
// persistence); report the ones another instance took meanwhile.
const REFRESH = `
local lost = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[i + 1] then redis.call('PEXPIRE', key, ARGV[1])
  elseif not v then redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else table.insert(lost, key) end
end
return lost`;
// Compare-and-delete: never release an id another instance holds now.
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

/**
 * Which clientIds are connected. Locally a Map in connection order; across the
 * cluster a Redis key a clientId (`SET NX PX`), refreshed by a heartbeat and
 * released by compare-and-delete, so an id held by a crashed instance frees
 * itself within `ttlMs`.
 */
export class ClientRegistry extends EventEmitter<{ change: [] }> {
  readonly #local = new Map<string, Lease>();
  readonly #instanceId: string;
  readonly #redis: RedisConnection | undefined;
  readonly #log: Logger;
  readonly #ttlMs: number;
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(opts: { instanceId: string; redis?: RedisConnection; log: Logger; ttlMs?: number }) {
    super();
    this.#instanceId = opts.instanceId;
    this.#redis = opts.redis;
    this.#log = opts.log;
    this.#ttlMs = opts.ttlMs ?? 6_000;
  }

  get size(): number {
    return this.#local.size;
  }

  ids(): string[] {
    return [...this.#local.keys()];
  }

  /** A fresh server-assigned id, for clients that bring none. */
  newId(): string {
    return `anon-${randomBytes(6).toString("base64url")}`;
  }

  /**
   * Takes `id` for one connection, or answers undefined when it is held here or
   * on another instance. While Redis is away only this instance is checked
   * (fail open: refusing every client during an outage would be worse).
   */
  async claim(id: string, transport: Transport): Promise<Lease | undefined> {
    if (this.#local.has(id)) return undefined;
    const lease: Lease = { id, transport, token: `${this.#instanceId}#${randomBytes(6).toString("base64url")}` };
    this.#local.set(id, lease); // reserve before awaiting, so a local race loses here
    const redis = this.#redis;
    if (redis?.ready) {
      try {
        const key = KEY(id);
        const ok = await withTimeout(redis.command(key, ["SET", key, lease.token, "NX", "PX", String(this.#ttlMs)]), 1_000);
        if (String(ok) !== "OK") {
          this.#local.delete(id);
          return undefined;
        }
      } catch (err) {
        this.#log.warn({ clientId: id, err: (err as Error).message }, "clientId not checked cluster-wide: redis did not answer");
      }
    }
    this.emit("change");
    return lease;
  }

  /** Idempotent: a second call, or a call for a superseded lease, does nothing. */
  release(lease: Lease): void {
    if (this.#local.get(lease.id) !== lease) return;
    this.#local.delete(lease.id);
    this.emit("change");
    const redis = this.#redis;
    if (redis?.ready) {
      const key = KEY(lease.id);
      redis.command(key, ["EVAL", RELEASE, "1", key, lease.token]).catch((err: Error) => {
        this.#log.debug({ clientId: lease.id, err: err.message }, "release failed; the key expires by itself");
      });
    }
  }

  /** Starts the heartbeat that keeps this instance's ids claimed. */
  start(): void {
    if (!this.#redis || this.#heartbeat) return;
    this.#heartbeat = setInterval(() => void this.#refresh(), Math.max(50, Math.floor(this.#ttlMs / 3)));
    this.#heartbeat.unref();
  }

  /** Stops the heartbeat and releases every id still held. */
  async stop(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    const redis = this.#redis;
    const leases = [...this.#local.values()];
    if (!redis?.ready || leases.length === 0) return;
    const release = (l: Lease) => {
      const key = KEY(l.id);
      return redis.command(key, ["EVAL", RELEASE, "1", key, l.token]);
    };
    await withTimeout(Promise.all(leases.map(release)), 1_000).catch(() => undefined);
  }

  async #refresh(): Promise<void> {
    const redis = this.#redis;
    if (!redis?.ready || this.#local.size === 0) return;
    // One script a bucket (its keys share a slot), at most 500 keys each; all in flight at once.
    const groups = new Map<number, { keys: string[]; tokens: string[] }>();
    for (const lease of this.#local.values()) {
      const bucket = bucketOf(lease.id);
      let group = groups.get(bucket);
      if (!group) groups.set(bucket, (group = { keys: [], tokens: [] }));
      group.keys.push(keyIn(bucket, lease.id));
      group.tokens.push(lease.token);
    }
    const batches = [...groups.values()].flatMap(({ keys, tokens }) =>
      Array.from({ length: Math.ceil(keys.length / 500) }, (_, i) => ({
        keys: keys.slice(i * 500, i * 500 + 500),
        tokens: tokens.slice(i * 500, i * 500 + 500),
      })),
    );
    const results = await Promise.allSettled(
      batches.map(
        ({ keys, tokens }) => redis.command(keys[0], ["EVAL", REFRESH, String(keys.length), ...keys, String(this.#ttlMs), ...tokens]) as Promise<string[]>,
      ),
    );
    const lost = results.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
    if (lost.length > 0) this.#log.warn({ keys: lost }, "clientIds claimed by another instance while redis was away");
    const failed = results.find((r) => r.status === "rejected");
    if (failed) this.#log.debug({ err: (failed.reason as Error).message }, "heartbeat failed; retrying next beat");
  }
}
