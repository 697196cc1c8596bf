import { freePort } from "../../harness/ports.js";
import { type InstanceProcess, startInstance } from "../../harness/instance.js";
import { type RedisProcess, startRedis } from "../../harness/redis.js";

export interface Cluster {
  redis: RedisProcess;
  instances: InstanceProcess[];
  stop(): Promise<void>;
}

/** A real redis-server and `n` real instances (ws1..wsN) talking through it, clients connecting to each directly. */
export async function startCluster(n: number, env: Record<string, string> = {}): Promise<Cluster> {
  const redis = await startRedis();
  const instances: InstanceProcess[] = [];
  const stop = async () => {
    await Promise.all(instances.map((i) => i.stop(1_000)));
    await redis.stop();
  };
  try {
    const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
    instances.push(
      ...(await Promise.all(
        ports.map((port, i) =>
          startInstance({ env: { PORT: String(port), INSTANCE_ID: `ws${i + 1}`, REDIS_URL: redis.url, PERIODIC_INTERVAL_SEC: "0", ...env } }),
        ),
      )),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { redis, instances, stop };
}
