import { freePort } from "./ports.js";
import { type Child, type Exit, spawnChild, stopChild } from "./processes.js";

export interface RedisProcess {
  readonly port: number;
  readonly url: string;
  /** Stops it (SIGTERM, then SIGKILL). */
  stop(): Promise<Exit>;
  /** Stops it and starts it again on the same port, empty (no persistence). */
  restart(): Promise<void>;
}

/**
 * Debian's redis-server on a free loopback port, without persistence, so a
 * restart comes back empty as a crashed cache would.
 * @param opts.bin @default "redis-server"
 */
export async function startRedis(opts: { port?: number; bin?: string } = {}): Promise<RedisProcess> {
  const port = opts.port ?? (await freePort());
  const bin = opts.bin ?? "redis-server";
  let current = await launchRedisServer(port, [], bin);
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => stopChild(current.proc, current.exited),
    async restart() {
      await stopChild(current.proc, current.exited);
      current = await launchRedisServer(port, [], bin);
    },
  };
}

/**
 * redis-server in the foreground on loopback, without persistence, plus
 * `extraArgs`; resolves once it logs that it accepts connections (10 s at most).
 */
export async function launchRedisServer(port: number, extraArgs: readonly string[] = [], bin = "redis-server"): Promise<Child> {
  const child = spawnChild(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no", ...extraArgs], {
    name: `redis-server :${port}`,
  });
  try {
    await child.output.find((line) => line.includes("Ready to accept connections"), 10_000, `redis-server :${port} to be ready`);
  } catch (err) {
    child.proc.kill("SIGKILL");
    throw err;
  }
  return child;
}
