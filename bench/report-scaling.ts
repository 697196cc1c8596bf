import { f, KIB, md, n0, table } from "./lib/format.js";
import type { ScalingResult } from "./scenarios/scaling.js";

/** The scaling scenario's figures (docs/SCALING.md takes its numbers from these). */

const ROLES = ["instances", "nginx workers", "redis"] as const;

function roleRows(s: ScalingResult): string[][] {
  return ROLES.map((role) => [
    role,
    f(s.connect.usPerConnect[role], 0),
    f((s.memory.rssPerConnection[role] ?? NaN) / KIB, 1),
    f(s.idle.usPerConnectionSecond[role], 3),
    f(s.paced.usPerFrame[role], 2),
    f(s.burst.usPerFrame[role], 2),
  ]);
}

const ROLE_HEADER = ["role", "CPU µs a connect", "RSS KiB a connection", "idle CPU µs a connection-second", "CPU µs a frame, paced", "CPU µs a frame, burst"];

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
    `${n0(p.framesPerSec)} frames/s, publish to receipt p50 ${f(p.latency.p50)} ms, p99 ${f(p.latency.p99)} ms, Redis ${f(p.redisUsPerBroadcast)} µs a broadcast. ` +
    `Burst (${b.window} in flight, ${b.seconds} s): ${n0(b.framesPerSec)} frames/s, ${n0(b.framesPerSecPerInstance)} a second an instance on this shared machine, ` +
    `${n0(b.framesPerInstanceCpuSecond)} frames per instance CPU-second${b.incomplete + p.incomplete > 0 ? `; ${b.incomplete + p.incomplete} broadcasts incomplete` : ""}. ` +
    `Load average ${f(s.load.before)} before, ${f(s.load.after)} after.${s.memory.gc ? "" : " Memory without a forced GC (the instances had no inspector)."}`
  );
}

export function scalingConsole(s: ScalingResult): string {
  return [
    `\nScaling figures, ${s.target} (${s.instances} instances; docs/SCALING.md)`,
    `  ${redisLine(s)}`,
    `  ${phaseLine(s)}`,
    table(ROLE_HEADER, roleRows(s)),
  ].join("\n");
}

export function scalingMarkdown(s: ScalingResult): string[] {
  return [
    "",
    `## Scaling figures (${s.target}, ${s.instances} instances)`,
    "",
    "What docs/SCALING.md extrapolates from. CPU from /proc/<pid>/stat of each process (10 ms ticks) over each phase, memory from VmRSS before and after connecting; per frame = per broadcast delivered to one client.",
    "",
    redisLine(s),
    "",
    phaseLine(s),
    "",
    md(ROLE_HEADER, roleRows(s)),
  ];
}
