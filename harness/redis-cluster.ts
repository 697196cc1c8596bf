import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePortRange } from "./ports.js";
import { type Child, stopChild } from "./processes.js";
import { launchRedisServer } from "./redis.js";
import { poll } from "./waiting.js";

const run = promisify(execFile);

/**
 * A Redis Cluster on loopback from Debian's redis-server: three masters and
 * three replicas (by default), joined by `redis-cli --cluster create`, without
 * persistence. Node timeouts are short so a killed master fails over in about
 * a second; production clusters use the default 15 s.
 */

export interface ClusterNode {
  readonly port: number;
  readonly url: string;
  /** undefined once killed. */
  readonly pid: number | undefined;
}

export interface RedisCluster {
  readonly nodes: readonly ClusterNode[];
  /** Every node's URL, comma-separated: the value of REDIS_CLUSTER_NODES. */
  readonly seeds: string;
  /** The node currently serving `key`'s hash slot as master. */
  masterFor(key: string): Promise<ClusterNode>;
  /** SIGKILL one node (a crashed machine): its replica takes over after the node timeout. */
  kill(port: number): Promise<void>;
  /**
   * Resolves when every live node reports cluster_state:ok, all 16384 slots
   * are served by a live master, and every replica of a live master is in sync.
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** What a node has logged so far (for failure messages). */
  logs(port: number): readonly string[];
  /** Stops every node and removes their files. Idempotent. */
  stop(): Promise<void>;
}

export interface RedisClusterOptions {
  masters?: number;
  replicasPerMaster?: number;
  /** cluster-node-timeout: how long a silent master is given before its replica is promoted. @default 1000 */
  nodeTimeoutMs?: number;
}

/** redis-cli against one node; its stdout. */
async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], { timeout: 5_000 });
  return stdout;
}

interface NodeLine {
  port: number;
  flags: string[];
  /** Inclusive slot ranges it serves (masters). */
  ranges: [number, number][];
}

const servesAsMaster = (n: NodeLine): boolean => n.flags.includes("master") && !n.flags.some((f) => f.startsWith("fail"));

/** CLUSTER NODES as one node sees it. */
async function clusterNodes(port: number): Promise<NodeLine[]> {
  return (await cli(port, "cluster", "nodes"))
    .trim()
    .split("\n")
    .map((line) => {
      const [, address = "", flags = "", , , , , , ...slots] = line.split(" ");
      const ranges = slots
        .filter((s) => !s.startsWith("[")) // slots being migrated
        .map((range): [number, number] => {
          const [a, b = a] = range.split("-").map(Number);
          return [a!, b!];
        });
      return { port: Number(address.split("@")[0]!.split(":")[1]), flags: flags.split(","), ranges };
    });
}

export async function startRedisCluster(opts: RedisClusterOptions = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicasPerMaster ?? 1;
  const count = masters * (1 + replicas);
  // Client ports, then cluster-bus ports (set explicitly: the default port+10000 may be taken or out of range).
  const base = await freePortRange(count * 2);
  const dir = await mkdtemp(path.join(os.tmpdir(), "ws-redis-cluster-"));
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  process.on("exit", removeDir);
  const children = new Map<number, Child>();
  const everStarted = new Map<number, Child>();

  const stop = async (): Promise<void> => {
    await Promise.all([...children.values()].map((c) => stopChild(c.proc, c.exited)));
    children.clear();
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    process.removeListener("exit", removeDir);
  };

  const nodeOf = (port: number): ClusterNode => ({ port, url: `redis://127.0.0.1:${port}`, pid: children.get(port)?.pid });
  const ports = Array.from({ length: count }, (_, i) => base + i);

  try {
    await Promise.all(
      ports.map(async (port, i) => {
        // biome-ignore format: one option a line reads better
        const child = await launchRedisServer(port, [
          "--cluster-enabled", "yes", "--cluster-port", String(base + count + i),
          "--cluster-config-file", `nodes-${port}.conf`, "--cluster-node-timeout", String(opts.nodeTimeoutMs ?? 1_000),
          "--dir", dir,
          // Replicas sync at once: one that never synced cannot take over.
          "--repl-diskless-sync-delay", "0",
        ]);
        children.set(port, child);
        everStarted.set(port, child);
      }),
    );
    await cli(ports[0]!, "--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", String(replicas), "--cluster-yes");
  } catch (err) {
    await stop();
    throw err;
  }

  const cluster: RedisCluster = {
    get nodes() {
      return ports.map(nodeOf);
    },
    seeds: ports.map((p) => `redis://127.0.0.1:${p}`).join(","),
    async masterFor(key) {
      const live = [...children.keys()][0]!;
      const slot = Number((await cli(live, "cluster", "keyslot", key)).trim());
      const master = (await clusterNodes(live)).find((n) => servesAsMaster(n) && children.has(n.port) && n.ranges.some(([a, b]) => slot >= a && slot <= b));
      if (!master) throw new Error(`no live master serves slot ${slot}`);
      return nodeOf(master.port);
    },
    async kill(port) {
      const child = children.get(port);
      if (!child) return;
      children.delete(port);
      child.proc.kill("SIGKILL");
      await child.exited;
    },
    async waitHealthy(timeoutMs = 20_000) {
      await poll(
        async () => {
          for (const port of children.keys()) {
            if (!(await cli(port, "cluster", "info")).includes("cluster_state:ok")) return undefined;
            const view = await clusterNodes(port);
            const served = view
              .filter((n) => servesAsMaster(n) && children.has(n.port))
              .reduce((sum, n) => sum + n.ranges.reduce((k, [a, b]) => k + b - a + 1, 0), 0);
            if (served !== 16_384) return undefined;
            const replication = await cli(port, "info", "replication");
            const masterPort = Number(/master_port:(\d+)/.exec(replication)?.[1]);
            if (replication.includes("role:slave") && children.has(masterPort) && !replication.includes("master_link_status:up")) return undefined;
          }
          return true;
        },
        { timeoutMs, everyMs: 100, what: "the redis cluster to be healthy" },
      );
    },
    logs: (port) => everStarted.get(port)?.output.items ?? [],
    stop,
  };
  try {
    await cluster.waitHealthy();
  } catch (err) {
    await stop();
    throw err;
  }
  return cluster;
}
