import { f, KIB, md, n0, table } from "./lib/format.js";
import { ASSUME, SIZING_CASES, size, type UnitCosts } from "./lib/sizing.js";
import type { ScalingResult } from "./scenarios/scaling.js";

/** The scaling scenario's figures (docs/SCALING.md takes its numbers from these). */

const ROLES = ["instances", "nginx workers", "redis"] as const;

function roleRows(s: ScalingResult): string[][] {
  // Redis does nothing per frame (its cost is per broadcast: the line above); what its
  // column would show is the noise of its lease refreshes around zero.
  const perFrame = (phase: ScalingResult["paced"], role: string) => (role === "redis" ? "–" : f(phase.usPerFrame[role], 2));
  return ROLES.map((role) => [
    role,
    f(s.connect.usPerConnect[role], 0),
    f((s.memory.rssPerConnection[role] ?? NaN) / KIB, 1),
    f(s.idle.usPerConnectionSecond[role], 3),
    perFrame(s.paced, role),
    perFrame(s.burst, role),
  ]);
}

const ROLE_HEADER = [
  "role",
  "CPU µs a connect",
  "RSS KiB a connection",
  "idle CPU µs a connection-second",
  "CPU µs a frame, paced (less idle)",
  "CPU µs a frame, burst (less idle)",
];

/** The per-unit costs the sizing extrapolates from: paced per-frame costs (one broadcast at a time: the dearer case). */
export function unitCosts(s: ScalingResult): UnitCosts {
  return {
    instanceUsPerFrame: s.paced.usPerFrame.instances ?? NaN,
    instanceUsPerConnSec: s.idle.usPerConnectionSecond.instances ?? NaN,
    nginxUsPerFrame: s.paced.usPerFrame["nginx workers"] ?? NaN,
    nginxUsPerConnSec: s.idle.usPerConnectionSecond["nginx workers"] ?? NaN,
    redisUsPerPublish: s.redis.baseUsPerPublish,
    redisUsPerSubscriber: s.redis.usPerSubscriber,
    redisUsPerConnSec: s.idle.usPerConnectionSecond.redis ?? NaN,
    instanceKiBPerConn: (s.memory.rssPerConnection.instances ?? NaN) / KIB,
    nginxKiBPerConn: (s.memory.rssPerConnection["nginx workers"] ?? NaN) / KIB,
  };
}

const SIZING_HEADER = [
  "connections",
  "broadcasts/s",
  "frames/s",
  "instances",
  "(by)",
  "instance cores",
  "nginx replicas (4 cores)",
  "nginx cores",
  "Redis broadcast shard, % of a core",
  "Redis lease cores",
  "Redis shards",
  "RSS GiB instances + nginx",
];

function sizingRows(s: ScalingResult): string[][] {
  const c = unitCosts(s);
  return SIZING_CASES.map(([n, rate]) => {
    const r = size(c, n, rate);
    return [
      n0(n),
      n0(rate),
      n0(r.framesPerSec),
      n0(r.instances),
      r.instancesBy,
      f(r.instanceCores, 1),
      n0(r.nginxReplicas),
      f(r.nginxCores, 1),
      f(r.redisBroadcastCores * 100, 1),
      f(r.redisLeaseCores, 2),
      r.redisShards > 0 ? n0(r.redisShards) : "over one shard",
      `${f(r.instanceGiB, 1)} + ${f(r.nginxGiB, 1)}`,
    ];
  });
}

const SIZING_NOTE =
  `Extrapolated (linear) from the figures above, paced per-frame costs; planned: an instance at ${ASSUME.instanceCores * 100} % of its one core ` +
  `and at most ${n0(ASSUME.connectionsPerInstance)} connections (MAX_CONNECTIONS), an nginx replica of 4 cores at 70 % holding at most ` +
  `${n0(ASSUME.connectionsPerNginx)} clients, a Redis shard at ${ASSUME.redisShardCores * 100} % of its one core (the broadcast channel's shard ` +
  "also takes leases up to that; leases spread over the others).";

function redisLine(s: ScalingResult): string {
  const r = s.redis;
  const rows = r.rows
    .map((x) => `${x.subscribers} subscribers: ${f(x.usPerPublish)} µs (${n0(x.publishes)} publishes, ${f(x.cpuSeconds, 2)} CPU-s)`)
    .join("; ");
  return (
    `Redis CPU a published broadcast: ${f(r.baseUsPerPublish)} µs + ${f(r.usPerSubscriber)} µs a subscribing instance ` +
    `(least squares over ${rows}; channel ${r.channel ?? "?"}; idle ${n0(r.idleUsPerSec)} µs/s subtracted)${r.note ? `. ${r.note}` : ""}`
  );
}

function phaseLine(s: ScalingResult): string {
  const b = s.burst;
  const p = s.paced;
  return (
    `${n0(s.connected)} clients through nginx (connected at ${n0(s.connect.ratePerSec)}/s). Paced (1 in flight): ${p.broadcasts} broadcasts, ` +
    `${n0(p.framesPerSec)} frames/s, publish to receipt p50 ${f(p.latency.p50)} ms, p99 ${f(p.latency.p99)} ms. ` +
    `Burst (${b.window} in flight, ${b.seconds} s): ${n0(b.framesPerSec)} frames/s, ${n0(b.framesPerSecPerInstance)} a second an instance on this shared machine, ` +
    `${n0(b.framesPerInstanceCpuSecond)} frames per instance CPU-second (all of its CPU in the burst)${b.incomplete + p.incomplete > 0 ? `; ${b.incomplete + p.incomplete} broadcasts incomplete` : ""}. ` +
    `Load average ${f(s.load.before)} before, ${f(s.load.after)} after.${s.memory.gc ? "" : " Memory without a forced GC (the instances had no inspector)."}`
  );
}

export function scalingConsole(s: ScalingResult): string {
  return [
    `\nScaling figures, ${s.target} (${s.instances} instances; docs/SCALING.md)`,
    `  ${redisLine(s)}`,
    `  ${phaseLine(s)}`,
    table(ROLE_HEADER, roleRows(s)),
    `  ${SIZING_NOTE}`,
    table(SIZING_HEADER, sizingRows(s)),
  ].join("\n");
}

export function scalingMarkdown(s: ScalingResult): string[] {
  return [
    "",
    `## Scaling figures (${s.target}, ${s.instances} instances)`,
    "",
    "What docs/SCALING.md extrapolates from. CPU from /proc/<pid>/stat of each process (10 ms ticks) over each phase, memory from VmRSS before and after connecting (after a forced GC in the instances); a frame is a broadcast delivered to one client, and its cost is the phase's CPU less what the same clients cost idle over as long.",
    "",
    redisLine(s),
    "",
    phaseLine(s),
    "",
    md(ROLE_HEADER, roleRows(s)),
    "",
    SIZING_NOTE,
    "",
    md(SIZING_HEADER, sizingRows(s), [4]),
  ];
}
