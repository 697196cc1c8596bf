import { freePort } from "./free-port.js";
import { type Exit, spawnChild, stopChild } from "./child.js";

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
 */
export async function startRedis(opts: { port?: number; bin?: string } = {}): Promise<RedisProcess> {
  const port = opts.port ?? (await freePort());
  let current = await launch(port, opts.bin ?? "redis-server");
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => stopChild(current.proc, current.exited),
    async restart() {
      await stopChild(current.proc, current.exited);
      current = await launch(port, opts.bin ?? "redis-server");
    },
  };
}

async function launch(port: number, bin: string) {
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  const child = spawnChild(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"], {
    onLine: (line) => {
      if (line.includes("Ready to accept connections")) ready();
    },
  });
  const exit = child.exited.then((e) => {
    throw new Error(`redis-server exited before it was ready (${JSON.stringify(e)}): ${child.output.slice(-5).join(" | ")}`);
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`redis-server not ready within 10 s: ${child.output.slice(-5).join(" | ")}`)), 10_000);
  });
  try {
    await Promise.race([isReady, exit, timeout]);
  } catch (err) {
    child.proc.kill("SIGKILL");
    throw err;
  } finally {
    clearTimeout(timer);
  }
  exit.catch(() => undefined);
  return child;
}
