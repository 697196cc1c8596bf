import { randomBytes } from "node:crypto";
import type { Logger } from "../logger.js";
import { withTimeout } from "../timeout.js";
import type { RedisConnection } from "./redis.js";

/**
 * `wbs:user:{NN}:<user>`: a sorted set of the user's connections (member: a
 * lease token, score: when it lapses, Redis's clock). The hash tag is a
 * bucket of the user, as the clientId registry's, so one script refreshes a
 * bucket's users in one call on a Redis Cluster.
 */
const BUCKETS = 64;
const bucketOf = (user: string): number => {
  let h = 0x811c9dc5; // FNV-1a, as the registry's
  for (let i = 0; i < user.length; i++) h = Math.imul(h ^ user.charCodeAt(i), 0x01000193);
  return (h >>> 0) % BUCKETS;
};
const keyIn = (bucket: number, user: string): string => `wbs:user:{${bucket}}:${user}`;
const KEY = (user: string): string => keyIn(bucketOf(user), user);

const CLOCK = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)";
// Drop lapsed entries (a crashed instance's), then take a place if one is free.
const CLAIM = `${CLOCK}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;
// ARGV: ttl, then for each key its number of tokens and the tokens. Re-adds
// entries that vanished (a Redis restart without persistence).
const REFRESH = `${CLOCK}
local ttl = tonumber(ARGV[1])
local at = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  for j = 1, n do redis.call('ZADD', key, now + ttl, ARGV[at + j]) end
  redis.call('PEXPIRE', key, ttl)
  at = at + n + 1
end
return 0`;

/**
 * The per-user connection cap (MAX_CONNECTIONS_PER_USER), cluster-wide: each
 * connection of a user holds a lease in Redis, refreshed by a heartbeat and
 * given back when it ends, so a crashed instance's lapse within `ttlMs`.
 * Alone, or while Redis is away, only this instance's are counted (fail
 * open, as the clientId registry). With no cap, nothing is kept.
 */
export class UserSessions {
  readonly #local = new Map<string, Set<string>>();
  readonly #redis: RedisConnection | undefined;
  readonly #log: Logger;
  readonly #ttlMs: number;
  readonly #cap: number;
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(opts: { cap: number; instanceId: string; redis?: RedisConnection; log: Logger; ttlMs?: number }) {
    this.#cap = opts.cap;
    this.#redis = opts.redis;
    this.#log = opts.log;
    this.#ttlMs = opts.ttlMs ?? 6_000;
    this.#prefix = `${opts.instanceId}#`;
  }

  readonly #prefix: string;

  get cap(): number {
    return this.#cap;
  }

  /** A lease for one more connection of `user`, or undefined when it holds `cap` already (anywhere); "none" without a cap. */
  async claim(user: string): Promise<string | undefined | "none"> {
    if (this.#cap <= 0) return "none";
    let mine = this.#local.get(user);
    if ((mine?.size ?? 0) >= this.#cap) return undefined;
    const token = `${this.#prefix}${randomBytes(6).toString("base64url")}`;
    if (!mine) this.#local.set(user, (mine = new Set()));
    mine.add(token); // reserved before awaiting, so a local race loses here
    const redis = this.#redis;
    if (redis?.ready) {
      try {
        const key = KEY(user);
        const ok = await withTimeout(redis.command(key, ["EVAL", CLAIM, "1", key, token, String(this.#ttlMs), String(this.#cap)]), 1_000);
        if (Number(ok) !== 1) {
          this.#drop(user, token);
          return undefined;
        }
      } catch (err) {
        this.#log.warn({ user, err: (err as Error).message }, "per-user cap not checked cluster-wide: redis did not answer");
      }
    }
    return token;
  }

  /** Idempotent. */
  release(user: string, token: string): void {
    if (!this.#drop(user, token)) return;
    const redis = this.#redis;
    if (redis?.ready) {
      const key = KEY(user);
      redis.command(key, ["ZREM", key, token]).catch((err: Error) => this.#log.debug({ user, err: err.message }, "release failed; the entry lapses by itself"));
    }
  }

  start(): void {
    if (!this.#redis || this.#cap <= 0 || this.#heartbeat) return;
    this.#heartbeat = setInterval(() => void this.#refresh(), Math.max(50, Math.floor(this.#ttlMs / 3)));
    this.#heartbeat.unref();
  }

  /** Stops the heartbeat and gives back every lease still held. */
  async stop(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    const redis = this.#redis;
    if (!redis?.ready || this.#local.size === 0) return;
    const all = [...this.#local].map(([user, tokens]) => {
      const key = KEY(user);
      return redis.command(key, ["ZREM", key, ...tokens]);
    });
    this.#local.clear();
    await withTimeout(Promise.all(all), 1_000).catch(() => undefined);
  }

  #drop(user: string, token: string): boolean {
    const mine = this.#local.get(user);
    if (!mine?.delete(token)) return false;
    if (mine.size === 0) this.#local.delete(user);
    return true;
  }

  async #refresh(): Promise<void> {
    const redis = this.#redis;
    if (!redis?.ready || this.#local.size === 0) return;
    // One script a bucket (its keys share a slot), at most 500 tokens each.
    const groups = new Map<number, { keys: string[]; args: string[]; tokens: number }[]>();
    for (const [user, tokens] of this.#local) {
      const bucket = bucketOf(user);
      let batches = groups.get(bucket);
      if (!batches) groups.set(bucket, (batches = []));
      let batch = batches[batches.length - 1];
      if (!batch || batch.tokens >= 500) batches.push((batch = { keys: [], args: [], tokens: 0 }));
      batch.keys.push(keyIn(bucket, user));
      batch.args.push(String(tokens.size), ...tokens);
      batch.tokens += tokens.size;
    }
    const results = await Promise.allSettled(
      [...groups.values()]
        .flat()
        .map(({ keys, args }) => redis.command(keys[0], ["EVAL", REFRESH, String(keys.length), ...keys, String(this.#ttlMs), ...args])),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) this.#log.debug({ err: (failed.reason as Error).message }, "user heartbeat failed; retrying next beat");
  }
}
