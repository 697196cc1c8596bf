/**
 * Extrapolation for docs/SCALING.md: from figures measured on one machine to
 * the processes a deployment of N connections at R broadcasts a second
 * (each to every connection) needs. Linear in what was measured; the
 * assumptions below are choices, not measurements.
 */

/** What the scaling scenario measured, per unit (µs of one core, KiB). */
export interface UnitCosts {
  /** Instances' CPU µs a delivered frame, and a held connection-second (heartbeats). */
  instanceUsPerFrame: number;
  instanceUsPerConnSec: number;
  nginxUsPerFrame: number;
  nginxUsPerConnSec: number;
  /** Redis CPU µs a published broadcast: base + perSubscriber × instances (one channel, one shard). */
  redisUsPerPublish: number;
  redisUsPerSubscriber: number;
  /** Redis CPU µs a held connection-second: clientId lease refreshes (keys spread over shards on a cluster). */
  redisUsPerConnSec: number;
  instanceKiBPerConn: number;
  nginxKiBPerConn: number;
}

/** The assumptions: how much of a core we plan to use, and how big a box or process is. */
export const ASSUME = {
  /** A Node instance is one thread: at most one core; plan for this share of it. */
  instanceCores: 0.7,
  /** MAX_CONNECTIONS's default. */
  connectionsPerInstance: 20_000,
  /** An nginx replica of 4 cores (4 workers) planned at 70 %. */
  nginxCores: 4 * 0.7,
  /** 4 workers × worker_connections 32768 ÷ 2 (nginx.conf as shipped, descriptors raised to worker_rlimit_nofile). */
  connectionsPerNginx: (4 * 32_768) / 2,
  /** Redis runs commands on one thread: a shard is one core, planned at 70 %. */
  redisShardCores: 0.7,
} as const;

export interface SizingRow {
  connections: number;
  broadcastsPerSec: number;
  framesPerSec: number;
  instances: number;
  /** What decides the instance count: connections (MAX_CONNECTIONS) or CPU. */
  instancesBy: "connections" | "CPU";
  instanceCores: number;
  nginxReplicas: number;
  nginxCores: number;
  /** Redis CPU (share of one core) of the broadcast channel's shard: every broadcast, once per instance. */
  redisBroadcastCores: number;
  /** Redis CPU (cores, over all shards) of the clientId leases. */
  redisLeaseCores: number;
  /** Shards for the CPU: the broadcast shard plus as many as the leases need; 0 when the broadcast channel alone overflows a shard. */
  redisShards: number;
  /** Resident memory, GiB: instances and nginx. */
  instanceGiB: number;
  nginxGiB: number;
}

/** One row of the table: N connections at R broadcasts a second. */
export function size(c: UnitCosts, connections: number, broadcastsPerSec: number): SizingRow {
  const frames = connections * broadcastsPerSec;
  const instanceCores = (frames * c.instanceUsPerFrame + connections * c.instanceUsPerConnSec) / 1e6;
  const byConn = Math.ceil(connections / ASSUME.connectionsPerInstance);
  const byCpu = Math.ceil(instanceCores / ASSUME.instanceCores);
  const instances = Math.max(byConn, byCpu, 1);
  const nginxCores = (frames * c.nginxUsPerFrame + connections * c.nginxUsPerConnSec) / 1e6;
  const nginxReplicas = Math.max(Math.ceil(connections / ASSUME.connectionsPerNginx), Math.ceil(nginxCores / ASSUME.nginxCores), 1);
  const redisBroadcastCores = (broadcastsPerSec * (c.redisUsPerPublish + c.redisUsPerSubscriber * instances)) / 1e6;
  const redisLeaseCores = (connections * c.redisUsPerConnSec) / 1e6;
  const fits = redisBroadcastCores <= ASSUME.redisShardCores;
  // The broadcast shard takes leases too, up to what its core has left.
  const leftOnBroadcastShard = Math.max(0, ASSUME.redisShardCores - redisBroadcastCores);
  const redisShards = fits ? 1 + Math.max(0, Math.ceil((redisLeaseCores - leftOnBroadcastShard) / ASSUME.redisShardCores)) : 0;
  return {
    connections,
    broadcastsPerSec,
    framesPerSec: frames,
    instances,
    instancesBy: byCpu > byConn ? "CPU" : "connections",
    instanceCores,
    nginxReplicas,
    nginxCores,
    redisBroadcastCores,
    redisLeaseCores,
    redisShards,
    instanceGiB: (connections * c.instanceKiBPerConn) / 1024 / 1024,
    nginxGiB: (connections * c.nginxKiBPerConn) / 1024 / 1024,
  };
}

/** The table of docs/SCALING.md: 100k and 1M connections at 1, 10 and 100 broadcasts a second. */
export const SIZING_CASES: [connections: number, broadcastsPerSec: number][] = [
  [100_000, 1],
  [100_000, 10],
  [100_000, 100],
  [1_000_000, 1],
  [1_000_000, 10],
  [1_000_000, 100],
];
