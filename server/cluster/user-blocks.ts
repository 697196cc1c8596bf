import type { Logger } from "../logger.js";
import { withTimeout } from "../timeout.js";
import type { RedisConnection } from "./redis.js";

/** One hash of every block (user → until, ms since the epoch): few, written by admins, read whole at start. */
const KEY = "wbs:blocks";
/** How often an instance reads the hash again, for a block whose announcement it missed (Redis was away). */
const RELOAD_MS = 10_000;

/**
 * Users refused new connections until a time, cluster-wide: kept in Redis
 * (so an instance that restarts still refuses them) and announced to the
 * other instances, so admission reads only memory. Alone, in memory.
 */
export class UserBlocks {
  readonly #until = new Map<string, number>();
  readonly #redis: RedisConnection | undefined;
  readonly #log: Logger;
  readonly #announce: (user: string, until: number) => void;
  #reload: NodeJS.Timeout | undefined;

  constructor(opts: { redis?: RedisConnection; log: Logger; announce: (user: string, until: number) => void }) {
    this.#redis = opts.redis;
    this.#log = opts.log;
    this.#announce = opts.announce;
  }

  /** Milliseconds `user` is still blocked for (0: not blocked). */
  remainingMs(user: string): number {
    const until = this.#until.get(user);
    if (until === undefined) return 0;
    const left = until - Date.now();
    if (left > 0) return left;
    this.#until.delete(user);
    return 0;
  }

  /** Blocks `user` for `ms` (0 lifts a block) on every instance; resolves once Redis has it (or it could not). */
  async block(user: string, ms: number): Promise<{ until: number; stored: boolean }> {
    const until = ms > 0 ? Date.now() + ms : 0;
    this.apply(user, until);
    this.#announce(user, until);
    const redis = this.#redis;
    if (!redis?.ready) return { until, stored: false };
    try {
      await withTimeout(redis.command(KEY, until > 0 ? ["HSET", KEY, user, String(until)] : ["HDEL", KEY, user]), 1_000);
      return { until, stored: true };
    } catch (err) {
      this.#log.warn({ user, err: (err as Error).message }, "block not stored in redis: it holds on the running instances only");
      return { until, stored: false };
    }
  }

  /** Another instance's block (or lift: until 0). */
  apply(user: string, until: number): void {
    if (until > Date.now()) this.#until.set(user, until);
    else this.#until.delete(user);
  }

  /** Reads every block from Redis, now and every RELOAD_MS. */
  async start(): Promise<void> {
    if (!this.#redis || this.#reload) return;
    await this.#load();
    this.#reload = setInterval(() => void this.#load(), RELOAD_MS);
    this.#reload.unref();
  }

  stop(): void {
    clearInterval(this.#reload);
    this.#reload = undefined;
  }

  async #load(): Promise<void> {
    const redis = this.#redis;
    if (!redis?.ready) return;
    try {
      const reply = await withTimeout(redis.command(KEY, ["HGETALL", KEY]), 2_000);
      const entries = Array.isArray(reply) ? pairs(reply as string[]) : Object.entries((reply ?? {}) as Record<string, string>);
      const now = Date.now();
      const past: string[] = [];
      for (const [user, value] of entries) {
        const until = Number(value);
        if (until > now) this.#until.set(user, until);
        else past.push(user);
      }
      if (past.length > 0) await redis.command(KEY, ["HDEL", KEY, ...past]);
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, "blocks not read from redis; trying again later");
    }
  }
}

const pairs = (flat: string[]): [string, string][] => Array.from({ length: Math.floor(flat.length / 2) }, (_, i) => [flat[2 * i]!, flat[2 * i + 1]!]);
