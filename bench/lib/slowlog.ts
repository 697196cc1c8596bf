import { redisCommand } from "./redis-raw.js";

/** The longest command Redis ran over a phase, from its SLOWLOG. */
export interface SlowlogMax {
  /** Its duration, ms (Redis measures the command's own work: no network, no waiting). */
  ms: number;
  /** Its name (`EVAL`, `XADD`, …). */
  command: string;
  /** Commands logged over the phase. */
  logged: number;
}

/** Entries the log may keep during a phase: every command is logged, and the longest must not be pushed out. */
const MAX_LEN = 50_000;
/** Our own commands, left out of the figure. */
const OURS = new Set(["SLOWLOG", "CONFIG", "CLIENT", "HELLO", "AUTH", "SELECT"]);

/** A CONFIG GET answer's value (an array [name, value] in RESP2, a map in RESP3). */
function configValue(reply: unknown, name: string): string | undefined {
  if (Array.isArray(reply)) return reply[1] === undefined ? undefined : String(reply[1]);
  if (reply instanceof Map) return reply.get(name) === undefined ? undefined : String(reply.get(name));
  if (reply && typeof reply === "object")
    return (reply as Record<string, unknown>)[name] === undefined ? undefined : String((reply as Record<string, unknown>)[name]);
  return undefined;
}

/**
 * Starts logging every command (`CONFIG SET slowlog-log-slower-than 0`, room
 * for MAX_LEN entries, `SLOWLOG RESET`); stop() reads the whole log (at
 * least `SLOWLOG GET 128`), puts Redis's settings back and answers the
 * longest entry, or undefined when none was logged.
 */
export async function startSlowlog(url: string): Promise<{ stop(): Promise<SlowlogMax | undefined> }> {
  const get = async (name: string) => configValue(await redisCommand(url, ["CONFIG", "GET", name]), name);
  const threshold = (await get("slowlog-log-slower-than")) ?? "10000";
  const maxLen = (await get("slowlog-max-len")) ?? "128";
  await redisCommand(url, ["CONFIG", "SET", "slowlog-max-len", String(Math.max(MAX_LEN, Number(maxLen) || 0))]);
  await redisCommand(url, ["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
  await redisCommand(url, ["SLOWLOG", "RESET"]);
  return {
    async stop() {
      try {
        const logged = Number(await redisCommand(url, ["SLOWLOG", "LEN"])) || 0;
        const entries = (await redisCommand(url, ["SLOWLOG", "GET", String(Math.max(128, logged))], 15_000)) as unknown[];
        let max: SlowlogMax | undefined;
        for (const entry of entries) {
          // [id, unix time, duration µs, [command, args…], client address, client name]
          if (!Array.isArray(entry) || !Array.isArray(entry[3])) continue;
          const command = String(entry[3][0] ?? "?").toUpperCase();
          const ms = Number(entry[2]) / 1000;
          if (OURS.has(command) || !Number.isFinite(ms)) continue;
          if (!max || ms > max.ms) max = { ms, command, logged };
        }
        return max;
      } finally {
        await redisCommand(url, ["CONFIG", "SET", "slowlog-log-slower-than", threshold]).catch(() => undefined);
        await redisCommand(url, ["CONFIG", "SET", "slowlog-max-len", maxLen]).catch(() => undefined);
        await redisCommand(url, ["SLOWLOG", "RESET"]).catch(() => undefined);
      }
    },
  };
}
