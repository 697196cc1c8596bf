import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { InstanceProcess } from "../../harness/instance.js";
import { freePort } from "../../harness/ports.js";
import { type Child, stopChild } from "../../harness/processes.js";
import { launchRedisServer } from "../../harness/redis.js";
import { startInstances } from "./cluster.js";

/**
 * A redis-server that keeps its data across a restart (append-only file,
 * fsync on every write, in a directory of its own), unlike the harness's
 * startRedis, which comes back empty. `restart({ keepData: false })` is the
 * crashed cache: the directory is emptied before it starts again.
 */
export interface DurableRedis {
  readonly port: number;
  readonly url: string;
  /** Whether it is running (started and not stopped since). */
  readonly running: boolean;
  /** Stops it (SIGTERM: it flushes its append-only file), keeping the data for `start`. */
  stop(): Promise<void>;
  /** Starts it again on the same port after `stop`. */
  start(opts?: { keepData?: boolean }): Promise<void>;
  /** Stops and starts it again. @default keepData true */
  restart(opts?: { keepData?: boolean }): Promise<void>;
  /** Stops it and removes its directory. */
  remove(): Promise<void>;
}

export async function startDurableRedis(): Promise<DurableRedis> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "wbs-redis-"));
  let current: Child | undefined;
  const launch = async () => {
    // Later options win: persistence on, in its own directory.
    current = await launchRedisServer(port, ["--dir", dir, "--appendonly", "yes", "--appendfsync", "always"]);
  };
  const stop = async () => {
    if (current) await stopChild(current.proc, current.exited);
    current = undefined;
  };
  const start = async (opts: { keepData?: boolean } = {}) => {
    if (opts.keepData === false) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
    }
    await launch();
  };
  try {
    await launch();
  } catch (err) {
    await stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return current !== undefined;
    },
    stop,
    start,
    async restart(opts = {}) {
      await stop();
      await start(opts);
    },
    async remove() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** `n` real instances (ws1..wsN) on the Redis at `redisUrl`, started in parallel; stops the ones that started if one fails. */
export const startInstancesOn = (redisUrl: string, n: number, env: Record<string, string> = {}): Promise<InstanceProcess[]> =>
  startInstances(n, { REDIS_URL: redisUrl, ...env });
