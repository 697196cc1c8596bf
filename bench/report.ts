import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { f, KIB, MIB, md, n0, round, table } from "./lib/format.js";
import { lineChart, type Series } from "./lib/svg.js";
import type { Options } from "./options.js";
import type { AbuseCell, AbusePhase, AbusePhaseName } from "./scenarios/abuse.js";
import type { DrainResult } from "./scenarios/drain.js";
import type { EchoCell } from "./scenarios/echo.js";
import type { FanoutCell, TargetProfile } from "./scenarios/fanout.js";
import type { MemoryCell } from "./scenarios/memory.js";
import type { RampResult } from "./scenarios/ramp.js";
import type { ScalingResult } from "./scenarios/scaling.js";
import { scalingConsole, scalingMarkdown } from "./report-scaling.js";
import type { Footprints } from "./lib/footprint.js";
import { TARGET_LABELS, TARGET_NAMES, type TargetName } from "./targets.js";

export interface Machine {
  cores: number;
  node: string;
  fdLimit: number;
  load1AtStart: number;
  load1AtEnd: number;
  /** Load readings taken before each target that looked busy (load1 > half the cores). */
  busy: string[];
  generatorChildren: number;
  generatorCapacity: number;
}

export interface RunResults {
  preset: "quick" | "full";
  startedAt: string;
  durationSec: number;
  options: Options;
  machine: Machine;
  fanout: FanoutCell[];
  profiles: TargetProfile[];
  echo: EchoCell[];
  memory: MemoryCell[];
  scaling: ScalingResult | undefined;
  ramp: RampResult | undefined;
  drain: DrainResult | undefined;
  abuse: AbuseCell[];
  errors: { scenario: string; target: string; message: string }[];
  interrupted: boolean;
}

export interface Figure {
  name: string;
  value: number | undefined;
  display: string;
  goal: string;
  reference: string;
  met: boolean | undefined;
  basis: string;
}

/** Abuse goals: the receivers' p99 under a flood at most this many times their p99 without; an instance's RSS growth during the ping flood at most this. */
const ABUSE_P99_GOAL = 2;
const ABUSE_RSS_GOAL_MIB = 50;

/** The ramp's hold: clients, broadcasts, and whether every client got every one. */
function holdLine(r: RampResult): string {
  const h = r.hold;
  const all = h.fewestReceived === h.broadcasts && h.drops === 0 && h.skipped === 0;
  return (
    `held ${n0(h.clients)} clients ${h.seconds} s while broadcasting ${h.broadcasts} messages at ${h.ratePerSec}/s: ${n0(h.frames)} frames ` +
    `(${n0(h.broadcasts * h.clients)} expected), ${
      all
        ? "every client got every broadcast"
        : `NOT every client got every broadcast (open clients by broadcasts received: ${Object.entries(h.receivedBy)
            .map(([k, v]) => `${n0(v)} got ${k}`)
            .join(", ")}; ${h.skipped} skipped; ${n0(h.receivedByNotOpen)} frames to clients not open)`
    }, ` +
    `${h.drops} dropped, ${h.duplicates} duplicates; publish to receipt p50 ${f(h.latency.p50)} ms, p99 ${f(h.latency.p99)} ms, max ${f(h.latency.max)} ms`
  );
}

/** RSS growth per connection by role between before the ramp and its peak. */
function footprintLine(r: RampResult): string {
  const per = r.footprint.rssPerConnection;
  const peak = r.footprint.peak;
  const total = (role: string) => (peak[role] ?? []).reduce((n, p) => n + p.rss, 0);
  return `RSS growth per connection at ${n0(r.footprint.connections)} clients: ${Object.entries(per)
    .map(
      ([role, b]) =>
        `${role} ${f(b / KIB, 1)} KiB (${(peak[role] ?? []).length} process${(peak[role] ?? []).length === 1 ? "" : "es"}, ${f(total(role) / MIB, 0)} MiB at the peak)`,
    )
    .join("; ")}`;
}

/** Open descriptors of every process against its hard limit. */
function descriptorLine(peak: Footprints): string {
  return Object.entries(peak)
    .map(([role, ps]) => `${role} ${ps.map((p) => n0(p.fds)).join(" / ")} (limit ${[...new Set(ps.map((p) => n0(p.fdLimit)))].join(", ")})`)
    .join("; ");
}

/** The kernel's failure counters that moved during the ramp, and its TCP sockets at the peak. */
function kernelLine(r: RampResult): string {
  const moved = Object.entries(r.kernel.counters);
  const sockets = Object.entries(r.kernel.sockstat)
    .map(([k, v]) => `${k} ${n0(v)}`)
    .join(", ");
  return `TCP failure counters during the ramp (whole machine): ${moved.length > 0 ? moved.map(([k, v]) => `${k} +${n0(v)}`).join(", ") : "none moved"}; TCP sockets at the peak: ${sockets}`;
}

const cpuLine = (cpu: Record<string, number>): string =>
  Object.entries(cpu)
    .map(([k, v]) => `${k} ${f(v, 1)}`)
    .join(", ");

const cell = (r: RunResults, t: TargetName, clients: number) => r.fanout.find((c) => c.target === t && c.clients === clients);

/** The largest fan-out size measured on every one of `targets`. */
function commonSize(r: RunResults, targets: TargetName[]): number | undefined {
  const sizes = [...new Set(r.fanout.map((c) => c.clients))].sort((a, b) => b - a);
  return sizes.find((s) => targets.every((t) => cell(r, t, s) && cell(r, t, s)!.saturated.framesPerSec > 0));
}

/** Time to write `clients` frames at the baseline's throughput: no broadcast can complete faster here. */
export function floorMs(r: RunResults, clients: number): number | undefined {
  const base = cell(r, "raw", clients);
  if (!base || !(base.saturated.framesPerSec > 0)) return undefined;
  return (clients / base.saturated.framesPerSec) * 1000;
}

interface Ratio {
  value: number | undefined;
  perCpu: number | undefined;
  size: number | undefined;
  /** The same ratio at every size both targets ran, smallest first: how steady it is. */
  bySize: { size: number; value: number; perCpu: number }[];
}

function ratio(r: RunResults, a: TargetName, b: TargetName): Ratio {
  const bySize = [...new Set(r.fanout.map((c) => c.clients))]
    .sort((p, q) => p - q)
    .flatMap((size) => {
      const x = cell(r, a, size)?.saturated;
      const y = cell(r, b, size)?.saturated;
      if (!x || !y || !(y.framesPerSec > 0)) return [];
      return [{ size, value: x.framesPerSec / y.framesPerSec, perCpu: x.framesPerCpuSec / y.framesPerCpuSec }];
    });
  const size = commonSize(r, [a, b]);
  if (size === undefined) return { value: undefined, perCpu: undefined, size, bySize };
  const x = cell(r, a, size)!.saturated;
  const y = cell(r, b, size)!.saturated;
  return { value: x.framesPerSec / y.framesPerSec, perCpu: x.framesPerCpuSec / y.framesPerCpuSec, size, bySize };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** a ÷ b frames a second, trial by trial (the targets take turns, so trial k of each ran back to back), at every size. */
function pairedTrials(r: RunResults, a: TargetName, b: TargetName): number[] {
  return [...new Set(r.fanout.map((c) => c.clients))].flatMap((size) => {
    const x = cell(r, a, size)?.saturated.trials ?? [];
    const y = cell(r, b, size)?.saturated.trials ?? [];
    return x.flatMap((v, k) => (y[k]! > 0 ? [v / y[k]!] : []));
  });
}

/**
 * History on ÷ off: a ÷ b frames a second, the median of the paired trials
 * (trial k of each ran back to back) at every size; met on frames/s.
 */
function historyFigure(r: RunResults, on: TargetName, off: TargetName, what: string): Figure {
  const medians = ratio(r, on, off);
  const paired = pairedTrials(r, on, off);
  const value = paired.length > 0 ? median(paired) : undefined;
  return {
    name: `Socket.IO fan-out, ${what}, history on ÷ off (HISTORY_SIZE default ÷ 0)`,
    value,
    display:
      value === undefined
        ? "not measured"
        : `${f(value)}× frames/s (median of ${paired.length} paired trials, ${f(Math.min(...paired))}–${f(Math.max(...paired))}); ${f(medians.perCpu)}× per server CPU-second`,
    goal: "≥ 0.9×",
    reference: "",
    met: value === undefined ? undefined : value >= 0.9,
    basis: `saturated trials at every size, each ${on} trial right before its ${off} twin (a load swing hits both); met on frames/s. ${ratioBasis(medians)}`,
  };
}

const ratioDisplay = (x: { value: number | undefined; perCpu: number | undefined }) =>
  x.value === undefined ? "not measured" : `${f(x.value)}× frames/s; ${f(x.perCpu)}× per server CPU-second`;
const ratioBasis = (x: Ratio) =>
  x.size
    ? `saturated, ${n0(x.size)} clients (median of trials); at ${x.bySize.map((b) => n0(b.size)).join(" / ")} clients: ${x.bySize.map((b) => f(b.value)).join(" / ")} frames/s, ${x.bySize.map((b) => f(b.perCpu)).join(" / ")} per CPU-s`
    : "";
/** A goal is met when both bases meet it; the per-CPU one is the steadier on a shared machine. */
const ratioMet = (x: { value: number | undefined; perCpu: number | undefined }, goal: number) =>
  x.value === undefined || x.perCpu === undefined ? undefined : x.value >= goal && x.perCpu >= goal;

/** The figures the issue asks for, each measured in this run. */
export function figures(r: RunResults): Figure[] {
  const out: Figure[] = [];
  const sio = ratio(r, "sio-1", "raw");
  out.push({
    name: "Socket.IO fan-out, 1 instance ÷ bare ws baseline",
    value: sio.value,
    display: ratioDisplay(sio),
    goal: "≥ 0.8×",
    reference: "stock Socket.IO ≈ 0.6×",
    met: ratioMet(sio, 0.8),
    basis: ratioBasis(sio),
  });
  const stock = ratio(r, "sio-stock", "raw");
  out.push({
    name: "stock Socket.IO (nothing of ours) ÷ bare ws baseline",
    value: stock.value,
    display: ratioDisplay(stock),
    goal: "(for reference)",
    reference: "stock Socket.IO ≈ 0.6×",
    met: undefined,
    basis: ratioBasis(stock),
  });
  const ours = ratio(r, "sio-1", "sio-stock");
  out.push({
    name: "service's Socket.IO ÷ stock Socket.IO",
    value: ours.value,
    display: ratioDisplay(ours),
    goal: "(what our code costs)",
    reference: "",
    met: undefined,
    basis: ratioBasis(ours),
  });
  const ws = ratio(r, "ws-1", "raw");
  out.push({
    name: "/ws fan-out, 1 instance ÷ bare ws baseline",
    value: ws.value,
    display: ratioDisplay(ws),
    goal: "(for reference)",
    reference: "",
    met: undefined,
    basis: ratioBasis(ws),
  });
  out.push(historyFigure(r, "sio-1", "sio-1-nohist", "1 instance"));
  // The Redis path (opt-in target: a stack of its own).
  if (r.fanout.some((c) => c.target === "sio-4-direct-nohist"))
    out.push(historyFigure(r, "sio-4-direct", "sio-4-direct-nohist", "4 instances + Redis, direct"));
  const cluster = ratio(r, "sio-4-nginx", "sio-1");
  out.push({
    name: "4 instances via nginx ÷ 1 instance direct (Socket.IO)",
    value: cluster.value,
    display: ratioDisplay(cluster),
    goal: "≥ 0.7×",
    reference: "",
    met: ratioMet(cluster, 0.7),
    basis: ratioBasis(cluster),
  });
  const direct = ratio(r, "sio-4-direct", "sio-1");
  out.push({
    name: "4 instances direct ÷ 1 instance direct (Socket.IO)",
    value: direct.value,
    display: ratioDisplay(direct),
    goal: "(for reference)",
    reference: "",
    met: undefined,
    basis: ratioBasis(direct),
  });
  const mem = (t: TargetName) => r.memory.find((m) => m.target === t);
  for (const [t, goalKiB, ref] of [
    ["sio-1", 8, "stock Socket.IO ≈ 14.6 KB"],
    ["ws-1", 4, "bare ws ≈ 6.1 KB"],
    ["sio-stock", undefined, "stock Socket.IO ≈ 14.6 KB"],
    ["raw", undefined, "bare ws ≈ 6.1 KB"],
  ] as const) {
    const m = mem(t);
    const kib = m ? m.rssPerConnection / KIB : undefined;
    out.push({
      name: `memory per idle connection, ${m ? `${m.transport} (${t})` : t} (RSS)`,
      value: kib,
      display: m ? `${f(kib, 1)} KiB RSS (heap ${f(m.heapPerConnection / KIB, 1)} KiB)` : "not measured",
      goal: goalKiB ? `≤ ${goalKiB} KB` : t === "raw" ? "(the floor)" : "(reference)",
      reference: ref,
      met: kib === undefined || goalKiB === undefined ? undefined : kib <= goalKiB,
      basis: m ? `${n0(m.connected)} idle clients, forced GC before and after, ${m.settleMs} ms settle` : "",
    });
  }
  const largest = Math.max(...r.fanout.map((c) => c.clients), 0);
  const floor = floorMs(r, largest);
  for (const t of TARGET_NAMES) {
    const c = cell(r, t, largest);
    if (!c || floor === undefined || t.endsWith("-nohist")) continue;
    const v = c.paced.latency.p99 / floor;
    out.push({
      name: `p99 broadcast latency ÷ floor, ${t}`,
      value: v,
      display: `${f(v)}× (p99 ${f(c.paced.latency.p99)} ms, floor ${f(floor)} ms)`,
      goal: "≤ 1.2×",
      reference: "",
      met: v <= 1.2,
      basis: `${n0(largest)} clients, paced; floor = clients ÷ baseline frames/s`,
    });
  }
  if (r.ramp) {
    out.push({
      name: "most concurrent clients held via nginx (4 instances) without errors",
      value: r.ramp.heldWithoutErrors,
      display: n0(r.ramp.heldWithoutErrors),
      goal: "(largest found)",
      reference: "",
      met: undefined,
      basis: `ramp stopped: ${r.ramp.stoppedBecause}${r.ramp.fillStoppedBecause ? `; fill stopped: ${r.ramp.fillStoppedBecause}` : ""}; ${holdLine(r.ramp)}`,
    });
    const per = r.ramp.footprint.rssPerConnection;
    out.push({
      name: "memory per connection at the ramp's peak, via nginx (RSS growth ÷ clients)",
      value: (per.instances ?? NaN) + (per["nginx workers"] ?? NaN),
      display: `${f((per.instances ?? NaN) / KIB, 1)} KiB instances + ${f((per["nginx workers"] ?? NaN) / KIB, 1)} KiB nginx workers`,
      goal: "(measured)",
      reference: "",
      met: undefined,
      basis: `${n0(r.ramp.footprint.connections)} clients held; ${footprintLine(r.ramp)}`,
    });
  }
  if (r.drain) {
    const m = r.drain.moved;
    out.push({
      name: "drain under load: moved clients' messages missed / duplicates / out of order (recovery)",
      value: m.missed,
      display: movedDisplay(r.drain),
      goal: "0 / 0 / 0",
      reference: "",
      met: m.clients === 0 ? undefined : m.missed === 0 && m.duplicates === 0 && m.outOfOrder === 0 && m.notRecovered === 0,
      basis: `${n0(m.clients)} clients closed at ${r.drain.drainedInstance}'s deadline (FORCED_SHUTDOWN_AFTER_SEC=${r.drain.forcedShutdownSec}), reconnected through nginx with their offset and epoch; ${n0(r.drain.published)} broadcasts at ${r.drain.publishRatePerSec}/s`,
    });
  }
  out.push(...abuseFigures(r));
  return out;
}

/** The drain's moved clients, in one line. */
const movedDisplay = (d: DrainResult): string => {
  const m = d.moved;
  return `${n0(m.missed)} / ${n0(m.duplicates)} / ${n0(m.outOfOrder)} (${n0(m.clients)} moved; ${n0(m.resumes)} resumes: ${n0(m.recovered)} recovered:true, ${n0(m.notRecovered)} recovered:false; ${n0(m.replayed)} replayed)`;
};

const abusePhase = (c: AbuseCell, name: AbusePhaseName) => c.phases.find((p) => p.phase === name);
/** A server count, or "n/a" when the instances do not expose it. */
const na = (v: number | undefined) => (v === undefined ? "n/a" : n0(v));
/** Connections of the abuser that the server closed (as the abuser saw them). */
const closedByServer = (p: AbusePhase) => Object.values(p.abuser?.closedByServer ?? {}).reduce((a, b) => a + b, 0);
const abuserBasis = (p: AbusePhase | undefined) =>
  p?.abuser
    ? `abuser: ${n0(p.abuser.sent)} messages sent over ${n0(p.abuser.connects)} connections, ${n0(closedByServer(p))} of them closed by the server; the server accepted ${na(p.server.accepted)}, refused ${na(p.server.refused)} (wbs_rate_limited_total), wbs_rate_limit_disconnects_total +${na(p.server.disconnects)}`
    : "";

/** The abuse scenario's figures: p99 under each flood ÷ without, RSS growth during the ping flood. */
function abuseFigures(r: RunResults): Figure[] {
  const out: Figure[] = [];
  for (const c of r.abuse) {
    const base = abusePhase(c, "baseline");
    for (const [name, what, value] of [
      ["flood", "a message flood", c.floodP99Ratio],
      ["ping", "a `ping` flood", c.pingP99Ratio],
    ] as const) {
      const p = abusePhase(c, name);
      out.push({
        name: `abuse, ${c.target}: receivers' p99 under ${what} ÷ without`,
        value,
        display: value === undefined ? "not measured" : `${f(value)}× (p99 ${f(p?.probe.latency.p99)} ms vs ${f(base?.probe.latency.p99)} ms)`,
        goal: `≤ ${ABUSE_P99_GOAL}×`,
        reference: "",
        met: value === undefined ? undefined : value <= ABUSE_P99_GOAL,
        basis: `${n0(c.connected)} receivers, probe every ${c.probeGapMs} ms, ${p ? f(p.seconds, 1) : "–"} s; ${abuserBasis(p)}${name === "ping" && p ? `; ${na(p.server.statusNotifications)} status notifications` : ""}`,
      });
    }
    const ping = abusePhase(c, "ping");
    const mib = c.pingRssGrowth === undefined ? undefined : c.pingRssGrowth / MIB;
    // On the stack, which instance it was (the abuser lands on any of them).
    const grew = ping && ping.rss.length > 1 ? ping.rss.reduce((a, b) => (b.max - b.before > a.max - a.before ? b : a)) : undefined;
    out.push({
      name: `abuse, ${c.target}: instance RSS growth during the ${ping ? f(ping.seconds, 0) : "–"} s ping flood`,
      value: mib,
      display: mib === undefined ? "not measured" : `${f(mib, 1)} MiB${grew ? ` (${grew.instance})` : ""}`,
      goal: `≤ ${ABUSE_RSS_GOAL_MIB} MB`,
      reference: "",
      met: mib === undefined ? undefined : mib <= ABUSE_RSS_GOAL_MIB,
      basis: ping
        ? `VmRSS every 100 ms, most during the flood − just before${ping.rss.length > 1 ? `, the instance that grew most of ${ping.rss.length}` : ""}`
        : "",
    });
  }
  return out;
}

function abuseRows(r: RunResults): { header: string[]; rows: string[][] } {
  const header = [
    "target",
    "phase",
    "s",
    "p50 ms",
    "p99 ms",
    "×base",
    "delivered",
    "abuser sent",
    "conns",
    "closed",
    "accepted",
    "refused",
    "cut",
    "status",
    "RSS +MiB",
    "CPU srv %",
  ];
  const rows = r.abuse.flatMap((c) => {
    const base = abusePhase(c, "baseline")?.probe.latency.p99;
    return c.phases.map((p) => [
      c.target,
      p.phase,
      f(p.seconds, 1),
      f(p.probe.latency.p50),
      f(p.probe.latency.p99),
      p.phase === "baseline" || base === undefined || !(base > 0) ? "" : f(p.probe.latency.p99 / base),
      `${n0(p.probe.delivered)}/${n0(p.probe.expected)}`,
      p.abuser ? n0(p.abuser.sent) : "",
      p.abuser ? n0(p.abuser.connects) : "",
      p.abuser ? n0(closedByServer(p)) : "",
      p.abuser ? na(p.server.accepted) : "",
      p.abuser ? na(p.server.refused) : "",
      p.abuser ? na(p.server.disconnects) : "",
      na(p.server.statusNotifications),
      f(p.rssGrowthMax / MIB, 1),
      f(cpuServer(p.cpu), 0),
    ]);
  });
  return { header, rows };
}

/** CPU of the serving processes: not the load generator, the abuser or the bench itself. */
const cpuServer = (cpu: Record<string, number>) =>
  Object.entries(cpu)
    .filter(([k]) => k !== "generator" && k !== "abuser" && !k.startsWith("bench"))
    .reduce((s, [, v]) => s + v, 0);

function fanoutRows(r: RunResults): { header: string[]; rows: string[][] } {
  const header = [
    "target",
    "clients",
    "frames/s",
    "×base",
    "frames/CPU-s",
    "×base",
    "p50 ms",
    "p99 ms",
    "max ms",
    "done p50",
    "done p99",
    "p99/floor",
    "CPU srv %",
    "CPU gen %",
    "lost",
  ];
  const rows = r.fanout.map((c) => {
    const base = cell(r, "raw", c.clients);
    const floor = floorMs(r, c.clients);
    const lost = c.paced.incomplete + c.saturated.incomplete;
    return [
      c.target,
      n0(c.clients) + (c.connected < c.clients ? ` (${n0(c.connected)})` : ""),
      n0(c.saturated.framesPerSec),
      base ? f(c.saturated.framesPerSec / base.saturated.framesPerSec) : "–",
      n0(c.saturated.framesPerCpuSec),
      base ? f(c.saturated.framesPerCpuSec / base.saturated.framesPerCpuSec) : "–",
      f(c.paced.latency.p50),
      f(c.paced.latency.p99),
      f(c.paced.latency.max),
      f(c.paced.completion.p50),
      f(c.paced.completion.p99),
      floor ? f(c.paced.latency.p99 / floor) : "–",
      f(cpuServer(c.saturated.cpu), 0),
      f(c.saturated.cpu.generator, 0),
      lost ? `${lost} bc` : c.drops ? `${c.drops} drops` : "0",
    ];
  });
  return { header, rows };
}

/** The table printed at the end of a run (stdout). */
export function renderConsole(r: RunResults): string {
  const parts: string[] = [];
  parts.push(`ws-broadcast-service bench (${r.preset}), ${r.startedAt}, ${round(r.durationSec, 0)} s, ${r.machine.cores} cores, node ${r.machine.node}`);
  if (r.machine.busy.length > 0)
    parts.push(`NOTE: the machine was busy during the run (${r.machine.busy.join("; ")}): absolute figures are noisy, compare the ratios.`);
  if (r.fanout.length > 0) {
    const { header, rows } = fanoutRows(r);
    parts.push("\nFan-out: frames/s saturated; latency publish→receipt, paced (ms); done = publish→last receiver (ms)");
    parts.push(table(header, rows));
  }
  if (r.echo.length > 0) {
    parts.push("\nEcho round trip (fixed rate)");
    parts.push(
      table(
        ["target", "clients", "rate/s", "sent", "answered", "errors", "p50 ms", "p99 ms", "max ms", "CPU srv %"],
        r.echo.map((e) => [
          e.target,
          n0(e.connected),
          n0(e.ratePerSec),
          n0(e.sent),
          n0(e.answered),
          n0(e.errors),
          f(e.rtt.p50),
          f(e.rtt.p99),
          f(e.rtt.max),
          f(cpuServer(e.cpu), 0),
        ]),
      ),
    );
  }
  if (r.memory.length > 0) {
    parts.push("\nMemory per idle connection (forced GC before and after)");
    parts.push(
      table(
        ["target", "transport", "clients", "RSS/conn KiB", "heap/conn KiB", "external/conn KiB"],
        r.memory.map((m) => [
          m.target,
          m.transport,
          n0(m.connected),
          f(m.rssPerConnection / KIB, 1),
          f(m.heapPerConnection / KIB, 1),
          f(m.externalPerConnection / KIB, 1),
        ]),
      ),
    );
  }
  if (r.scaling) parts.push(scalingConsole(r.scaling));
  if (r.ramp) {
    parts.push(
      `\nConnection ramp, ${r.ramp.target} (ramp stopped: ${r.ramp.stoppedBecause}${r.ramp.fillStoppedBecause ? `; fill stopped: ${r.ramp.fillStoppedBecause}` : ""}; held without errors ${n0(r.ramp.heldWithoutErrors)})`,
    );
    const ng = Object.entries(r.ramp.nginxErrors ?? {}).sort((a, b) => b[1] - a[1]);
    if (ng.length > 0)
      parts.push(
        `  nginx error.log: ${ng
          .slice(0, 4)
          .map(([k, v]) => `${v}× ${k}`)
          .join("; ")}`,
      );
    parts.push(
      table(
        ["phase", "rate/s", "done/s", "opened", "failed", "p50 ms", "p99 ms", "open"],
        r.ramp.steps.map((s) => [s.phase, n0(s.ratePerSec), n0(s.achievedPerSec), n0(s.opened), n0(s.failed), f(s.connect.p50), f(s.connect.p99), n0(s.open)]),
      ),
    );
    parts.push(`  ${holdLine(r.ramp)}`, `  ${footprintLine(r.ramp)}`, `  ${descriptorLine(r.ramp.footprint.peak)}`, `  ${kernelLine(r.ramp)}`);
  }
  if (r.drain) {
    const d = r.drain;
    parts.push("\nDrain under load");
    parts.push(
      `  ${d.drainedInstance}: SIGTERM→exit ${d.drainMs ?? "–"} ms (deadline ${d.forcedShutdownSec}s), replacement ready after ${d.replacementReadyMs ?? "–"} ms; ${d.published} broadcasts at ${d.publishRatePerSec}/s\n` +
        `  clients that stayed connected: ${n0(d.stayed.clients)}, messages lost: ${n0(d.stayed.lost)}, not arrived ${d.stayed.lastArrivedAfterMs} ms after the last publish: ${n0(d.stayed.notArrived)}, duplicates: ${n0(d.stayed.duplicates)}\n` +
        `  reconnect wave: ${n0(d.moved.clients)} clients moved, ${n0(d.reconnectWave.reconnects)} reconnects over ${d.reconnectWave.durationMs ?? "–"} ms, ` +
        `p50 ${f(d.reconnectWave.time.p50)} ms p99 ${f(d.reconnectWave.time.p99)} ms, ${n0(d.reconnectWave.failedAttempts)} failed attempts; open at end ${n0(d.openAtEnd)}/${n0(d.connected)}\n` +
        `  moved clients (recovering): ${movedDisplay(d)}`,
    );
  }
  if (r.abuse.length > 0) {
    parts.push(
      `\nAbuse (service limits at their defaults; one abuser, reconnecting when cut; probe every ${r.abuse[0]!.probeGapMs} ms; latency publish→receipt at the receivers; conns/closed: the abuser's connections and those the server closed; accepted/refused/cut: the instances' /metrics (cut = wbs_rate_limit_disconnects_total), n/a when absent)`,
    );
    const { header, rows } = abuseRows(r);
    parts.push(table(header, rows));
  }
  const figs = figures(r);
  if (figs.length > 0) {
    parts.push("\nFigures (ratios from this run)");
    parts.push(
      table(
        ["figure", "measured", "goal", "met"],
        figs.map((x) => [x.name, x.display, x.goal, x.met === undefined ? "" : x.met ? "yes" : "NO"]),
        ["l", "l", "l", "l"],
      ),
    );
  }
  for (const p of r.profiles) {
    parts.push(`\nCPU profile ${p.target} / ${p.process} (${n0(p.clients)} clients, saturated; busy ${p.summary.busyPercent}% of samples): by area`);
    parts.push(
      "  " +
        p.summary.byArea
          .slice(0, 8)
          .map((a) => `${a.area} ${a.percent}%`)
          .join(", "),
    );
    parts.push(
      table(
        ["self %", "function", "where"],
        p.summary.top.slice(0, 8).map((l) => [f(l.percent, 1), l.name, l.where]),
        ["r", "l", "l"],
      ),
    );
  }
  if (r.errors.length > 0) {
    parts.push("\nErrors");
    for (const e of r.errors) parts.push(`  ${e.scenario} ${e.target}: ${e.message}`);
  }
  return parts.join("\n");
}

const COLORS: Record<TargetName, string> = {
  raw: "#444444",
  "sio-stock": "#e377c2",
  "ws-1": "#1f77b4",
  "sio-1": "#d62728",
  "sio-1-nohist": "#ff9896",
  "sio-4-direct": "#2ca02c",
  "sio-4-direct-nohist": "#98df8a",
  "sio-4-nginx": "#9467bd",
};

export function renderChart(r: RunResults): string {
  const series: Series[] = [];
  for (const t of TARGET_NAMES) {
    const cells = r.fanout.filter((c) => c.target === t);
    if (cells.length === 0) continue;
    series.push({ name: `${t} p99`, color: COLORS[t], points: cells.map((c) => [c.clients, c.paced.latency.p99]) });
    series.push({ name: `${t} p50`, color: COLORS[t], dash: "5 4", points: cells.map((c) => [c.clients, c.paced.latency.p50]) });
  }
  const floors = [...new Set(r.fanout.map((c) => c.clients))].flatMap((n): [number, number][] => {
    const fl = floorMs(r, n);
    return fl === undefined ? [] : [[n, fl]];
  });
  if (floors.length > 0) series.push({ name: "floor (clients ÷ base frames/s)", color: "#ff7f0e", dash: "2 3", points: floors });
  return lineChart({
    title: "Broadcast latency (publish → receipt, paced) vs clients",
    xLabel: "connected clients",
    yLabel: "latency, ms",
    series,
    logY: true,
  });
}

export function renderMarkdown(r: RunResults): string {
  const L: string[] = [];
  L.push(`# Benchmark report (${r.preset})`);
  L.push("");
  L.push(
    `Run ${r.startedAt}, ${round(r.durationSec, 0)} s; ${r.machine.cores} cores, node ${r.machine.node}, fd limit ${r.machine.fdLimit}; load average ${f(r.machine.load1AtStart)} at start, ${f(r.machine.load1AtEnd)} at end; generator: ${r.machine.generatorChildren} processes, room for ${n0(r.machine.generatorCapacity)} connections.`,
  );
  if (r.machine.busy.length > 0)
    L.push(
      `\n**The machine was busy** (${r.machine.busy.join("; ")}): absolute figures are noisy; the ratios, measured side by side in this run, are what to compare.`,
    );
  if (r.interrupted) L.push("\n**Interrupted**: partial results.");
  L.push("");
  L.push("Everything runs on this one machine: servers, Redis, nginx, the load generator (several processes) and the publisher share its cores.");
  L.push(
    "Publishing goes through each target's own client path: a text frame on the baseline and on `/ws`, a Socket.IO `message` event (no ack) on Socket.IO, the same transport the receivers use. POST /broadcast-to-all is not used.",
  );
  L.push("");
  L.push("## Figures");
  L.push("");
  L.push(
    md(
      ["figure", "measured", "goal", "reference", "met", "basis"],
      figures(r).map((x) => [x.name, x.display, x.goal, x.reference, x.met === undefined ? "" : x.met ? "yes" : "**no**", x.basis]),
      [0, 1, 2, 3, 4, 5],
    ),
  );
  L.push("");
  L.push("## Targets");
  L.push("");
  for (const t of TARGET_NAMES) if (r.fanout.some((c) => c.target === t) || r.memory.some((m) => m.target === t)) L.push(`- \`${t}\`: ${TARGET_LABELS[t]}`);
  if (r.fanout.length > 0) {
    L.push("");
    L.push("## Fan-out");
    L.push("");
    L.push(
      `Each size: a paced phase (one broadcast in flight, ${r.options.pacedCount} at most or ${r.options.pacedMaxMs} ms: latency of every delivery, and completion = publish to last receiver), then ${r.options.trials} saturated trials (${r.options.window} in flight for ${r.options.throughputMs} ms each: frames delivered a second, CPU; the median trial is shown). All targets hold their clients at once and take turns, paced broadcast by broadcast and trial by trial, so a load spike from elsewhere hits them alike. frames/CPU-s = frames delivered per CPU-second of the serving processes (instances, Redis, nginx): what a core buys, whatever share of the shared machine the target got; the steadier basis for ratios here. Payload ${r.options.payloadBytes} bytes of text. Floor = clients ÷ baseline frames/s at that size.`,
    );
    L.push("");
    const { header, rows } = fanoutRows(r);
    L.push(md(header, rows));
    L.push("");
    L.push("![latency percentiles against client count](latency.svg)");
    L.push("");
    L.push("CPU in the saturated phase, percent of one core, by process:");
    L.push("");
    L.push(
      md(
        ["target", "clients", "CPU by process"],
        r.fanout.map((c) => [
          c.target,
          n0(c.clients),
          Object.entries(c.saturated.cpu)
            .map(([k, v]) => `${k} ${f(v, 0)}`)
            .join(", "),
        ]),
        [0, 2],
      ),
    );
    const failures = r.fanout.filter((c) => c.connectFailed > 0);
    if (failures.length > 0) {
      L.push("");
      L.push("Connect failures:");
      for (const c of failures)
        L.push(
          `- ${c.target} @${c.clients}: ${c.connectFailed} (${Object.entries(c.connectErrors)
            .map(([k, v]) => `${v}× ${k}`)
            .join("; ")})`,
        );
    }
  }
  if (r.echo.length > 0) {
    L.push("");
    L.push("## Echo round trip");
    L.push("");
    L.push(
      md(
        ["target", "round trip", "clients", "rate/s", "sent", "answered", "errors", "p50 ms", "p99 ms", "max ms", "CPU"],
        r.echo.map((e) => [
          e.target,
          e.path,
          n0(e.connected),
          n0(e.ratePerSec),
          n0(e.sent),
          n0(e.answered),
          n0(e.errors),
          f(e.rtt.p50),
          f(e.rtt.p99),
          f(e.rtt.max),
          Object.entries(e.cpu)
            .map(([k, v]) => `${k} ${f(v, 0)}`)
            .join(", "),
        ]),
        [0, 1, 10],
      ),
    );
  }
  if (r.memory.length > 0) {
    L.push("");
    L.push("## Memory per idle connection");
    L.push("");
    L.push(
      "A forced full GC (HeapProfiler.collectGarbage over the inspector: the servers run with `--inspect=127.0.0.1:0`, no server change), then RSS (/proc VmRSS) and heap (`process.memoryUsage()`), before and after the idle clients and a settle period. KiB = 1024 bytes.",
    );
    L.push("");
    L.push(
      md(
        ["target", "transport", "clients", "RSS before MiB", "RSS after MiB", "RSS/conn KiB", "heap/conn KiB", "external/conn KiB"],
        r.memory.map((m) => [
          m.target,
          m.transport,
          n0(m.connected),
          f(m.rssBefore / KIB / KIB, 1),
          f(m.rssAfter / KIB / KIB, 1),
          f(m.rssPerConnection / KIB, 2),
          f(m.heapPerConnection / KIB, 2),
          f(m.externalPerConnection / KIB, 2),
        ]),
      ),
    );
  }
  const grown = r.memory.filter((m) => m.heapGrowth);
  if (grown.length > 0) {
    L.push("");
    L.push(
      "Where the heap per idle connection goes: two heap snapshots (V8 collects garbage first) around the idle clients, self size by constructor, per connection:",
    );
    for (const m of grown) {
      L.push("");
      L.push(`${m.target} (${m.transport}), ${n0(m.heapGrowth!.clients)} clients:`);
      L.push("");
      L.push(
        md(
          ["what", "bytes/conn", "count/conn"],
          m
            .heapGrowth!.rows.filter((x) => x.bytesPerConnection >= 8)
            .map((x) => [`\`${x.what.replace(/[|`]/g, " ")}\``, f(x.bytesPerConnection, 0), f(x.countPerConnection, 2)]),
        ),
      );
    }
  }
  if (r.scaling) L.push(...scalingMarkdown(r.scaling));
  if (r.ramp) {
    L.push("");
    L.push(`## Connection ramp (${r.ramp.target})`);
    L.push("");
    L.push(
      `Steps of ${r.options.rampStepMs} ms, rate ×${r.options.rampFactor} a step from ${r.options.rampStartRate}/s, connections kept, until an error or p99 connect > 1 s; then, if it stopped on slowness, a fill at the last clean rate until a connect fails. Ramp stopped: ${r.ramp.stoppedBecause}.${r.ramp.fillStoppedBecause ? ` Fill stopped: ${r.ramp.fillStoppedBecause}.` : ""} Held without errors: **${n0(r.ramp.heldWithoutErrors)}** (peak open ${n0(r.ramp.peakOpen)}; after a ${r.ramp.hold.seconds} s hold with broadcasts ${n0(r.ramp.hold.openAfter)} open, ${r.ramp.hold.drops} dropped). Highest clean rate: ${n0(r.ramp.maxCleanRate)}/s.`,
    );
    L.push("");
    L.push(
      md(
        ["phase", "rate/s", "done/s", "attempted", "opened", "failed", "p50 ms", "p99 ms", "max ms", "open after"],
        r.ramp.steps.map((s) => [
          s.phase,
          n0(s.ratePerSec),
          n0(s.achievedPerSec),
          n0(s.attempted),
          n0(s.opened),
          n0(s.failed),
          f(s.connect.p50),
          f(s.connect.p99),
          f(s.connect.max),
          n0(s.open),
        ]),
      ),
    );
    L.push("", `Hold: ${holdLine(r.ramp)}`, "", `Memory: ${footprintLine(r.ramp)}`, "", `Descriptors at the peak: ${descriptorLine(r.ramp.footprint.peak)}`);
    L.push("", `CPU during the hold (% of one core): ${cpuLine(r.ramp.hold.cpu)}`, "", `Kernel: ${kernelLine(r.ramp)}`);
    const errs = r.ramp.steps.flatMap((s) => Object.entries(s.errors).map(([k, v]) => `${v}× ${k} (at ${s.ratePerSec}/s)`));
    if (errs.length > 0) L.push(`\nClient errors: ${errs.join("; ")}`);
    const ng = Object.entries(r.ramp.nginxErrors ?? {}).sort((a, b) => b[1] - a[1]);
    if (ng.length > 0)
      L.push(
        `\nnginx error.log: ${ng
          .slice(0, 6)
          .map(([k, v]) => `${v}× \`${k}\``)
          .join("; ")}`,
      );
  }
  if (r.drain) {
    const d = r.drain;
    L.push("");
    L.push("## Drain under load");
    L.push("");
    L.push(
      `${n0(d.connected)} Socket.IO clients through nginx (reconnecting like socket.io-client: 0.5–1.5 s, doubling; each sends the offset of the last broadcast it got and the epoch of its welcome, so the instance it lands on replays what it missed), a publisher on ws1 at ${d.publishRatePerSec}/s; ${d.drainedInstance} drained and replaced (\`stack.restartInstance\`), FORCED_SHUTDOWN_AFTER_SEC=${d.forcedShutdownSec}.`,
    );
    L.push("");
    L.push(
      md(
        ["measure", "value"],
        [
          ["SIGTERM → exit (time to drain)", `${d.drainMs ?? "–"} ms`],
          ["SIGTERM → replacement ready", `${d.replacementReadyMs ?? "–"} ms`],
          ["broadcasts published", n0(d.published)],
          ["clients that stayed connected", n0(d.stayed.clients)],
          ["messages lost by them (skipped: a later one arrived)", n0(d.stayed.lost)],
          [
            "…still missing at the end (late, or lost at the tail)",
            `${n0(d.stayed.notArrived)} (waited ${d.stayed.lastArrivedAfterMs} ms after the last publish)`,
          ],
          ["duplicates they saw", n0(d.stayed.duplicates)],
          [
            "clients moved (reconnect wave size)",
            `${n0(d.moved.clients)} (from ${Object.entries(d.moved.from)
              .map(([k, v]) => `${k}: ${v}`)
              .join(", ")})`,
          ],
          ["reconnect wave duration (first drop → last reconnect)", `${d.reconnectWave.durationMs ?? "–"} ms`],
          ["time to reconnect p50 / p99 / max", `${f(d.reconnectWave.time.p50)} / ${f(d.reconnectWave.time.p99)} / ${f(d.reconnectWave.time.max)} ms`],
          [
            "failed reconnect attempts (retried)",
            `${n0(d.reconnectWave.failedAttempts)}${
              Object.keys(d.reconnectWave.errors).length
                ? ` (${Object.entries(d.reconnectWave.errors)
                    .map(([k, v]) => `${v}× ${k.replace(/\|/g, "/")}`)
                    .join("; ")})`
                : ""
            }`,
          ],
          ["moved clients: messages missed (replays included)", n0(d.moved.missed)],
          ["moved clients: duplicates / out of order", `${n0(d.moved.duplicates)} / ${n0(d.moved.outOfOrder)}`],
          [
            "moved clients: reconnects that resumed (sent offset and epoch): recovered:true / recovered:false",
            `${n0(d.moved.resumes)}: ${n0(d.moved.recovered)} / ${n0(d.moved.notRecovered)} (${n0(d.moved.replayed)} broadcasts replayed)`,
          ],
          ["open at end / connected", `${n0(d.openAtEnd)} / ${n0(d.connected)}`],
        ],
        [0, 1],
      ),
    );
  }
  if (r.abuse.length > 0) renderAbuse(r, L);
  if (r.profiles.length > 0) {
    L.push("");
    L.push("## CPU profiles (saturated fan-out at the largest size)");
    L.push("");
    L.push(
      "Taken over the inspector (Profiler.start/stop around one extra saturated phase, 250 µs sampling), saved as `profiles/<target>-<process>.cpuprofile` (open in Chrome DevTools or speedscope). Self time, idle excluded.",
    );
    for (const p of r.profiles) {
      L.push("");
      L.push(
        `### ${p.target} / ${p.process}: ${n0(p.clients)} clients, ${n0(p.framesPerSec)} frames/s while profiled, busy ${p.summary.busyPercent}% of samples`,
      );
      L.push("");
      L.push(`By area: ${p.summary.byArea.map((a) => `${a.area} ${a.percent}%`).join(", ")}`);
      L.push("");
      L.push(
        md(
          ["self %", "self ms", "function", "where"],
          p.summary.top.map((l) => [f(l.percent, 1), f(l.selfMs, 1), `\`${l.name}\``, `\`${l.where}\``]),
          [2, 3],
        ),
      );
    }
  }
  if (r.errors.length > 0) {
    L.push("");
    L.push("## Errors");
    L.push("");
    for (const e of r.errors) L.push(`- ${e.scenario} ${e.target}: ${e.message}`);
  }
  L.push("");
  L.push(`Options: \`${JSON.stringify({ ...r.options, out: undefined })}\``);
  L.push("");
  return L.join("\n");
}

function renderAbuse(r: RunResults, L: string[]): void {
  const o = r.options;
  L.push("");
  L.push("## Abuse (service limits at their defaults)");
  L.push("");
  L.push(
    `Instances of their own, started with every abuse limit at its default (RATE_LIMIT_MESSAGES_PER_SEC, RATE_LIMIT_BURST, RATE_LIMIT_DISCONNECT_AFTER, STATUS_INTERVAL_SEC, MAX_CONNECTIONS unset; PERIODIC_INTERVAL_SEC=0, LOG_LEVEL=warn); the other scenarios' instances run with the rate limit and the connection cap off. On each target, ${n0(o.abuseReceivers)} receivers and a well-behaved probe that publishes one message every ${o.abuseProbeGapMs} ms (under the default 20 a second) throughout; the receivers' publish-to-receipt latency of the probe's messages is measured in three phases: a baseline (${o.abuseBaselineMs / 1000} s, probe only), a message flood (${o.abuseFloodMs / 1000} s) and a \`ping\` flood (${o.abusePingMs / 1000} s). The abuser (a generator process of its own) sends as fast as its socket drains and, whenever the server cuts it, connects again at once, like an attacker. VmRSS of the instance(s) is sampled every 100 ms; accepted = the instances' Δ wbs_broadcasts_total of the transport less the probe's messages, refused = Δ wbs_rate_limited_total, cut = Δ wbs_rate_limit_disconnects_total, status = Δ wbs_broadcasts_total{origin="status"} (summed over the instances; n/a when the server has no such metric). After each phase the probe's last messages get as long as the phase (2–10 s) to arrive (tail); any later are missing from \`delivered\`, not timed.`,
  );
  if (r.abuse.some((c) => c.target === "sio-4-nginx")) {
    L.push("");
    L.push(
      "On `sio-4-nginx` everyone (receivers, probe and abuser) connects through nginx from 127.0.0.1, which nginx.conf exempts from its per-address limits (limit_conn, limit_req on new sessions): the figures are the instances' own limits, not nginx's. An abuser from any other address would also meet nginx's limits.",
    );
  }
  const overcounted = r.abuse.flatMap((c) =>
    c.phases.filter((p) => p.abuser && (p.server.disconnects ?? 0) > p.abuser.connects).map((p) => `${c.target} ${p.phase}`),
  );
  if (overcounted.length > 0) {
    L.push("");
    L.push(
      `wbs_rate_limit_disconnects_total rose by more than the abuser had connections (${overcounted.join(", ")}): it counts more than connections closed (compare "closed by server"), and the instances wrote as many log records.`,
    );
  }
  if (r.abuse.some((c) => !c.limitMetrics)) {
    L.push("");
    L.push(
      `No wbs_rate_limited_total on ${r.abuse
        .filter((c) => !c.limitMetrics)
        .map((c) => `\`${c.target}\``)
        .join(", ")}: a server without the rate limit (refused and cut are n/a).`,
    );
  }
  L.push("");
  L.push(
    md(
      ["figure", "measured", "goal", "met", "basis"],
      abuseFigures(r).map((x) => [x.name, x.display, x.goal, x.met === undefined ? "" : x.met ? "met" : "**not met**", x.basis]),
      [0, 1, 2, 3, 4],
    ),
  );
  L.push("");
  L.push(
    md(
      [
        "target",
        "phase",
        "s",
        "probe sent",
        "delivered",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99 ×base",
        "tail ms",
        "receiver drops",
        "abuser sent",
        "abuser connections",
        "connect failures",
        "closed by server (close code)",
        "accepted",
        "refused",
        "cut",
        "status",
        "RSS before MiB",
        "RSS +max MiB",
        "log records",
        "CPU by process",
      ],
      r.abuse.flatMap((c) => {
        const base = abusePhase(c, "baseline")?.probe.latency.p99;
        return c.phases.map((p) => [
          c.target,
          p.phase,
          f(p.seconds, 1),
          n0(p.probe.sent),
          `${n0(p.probe.delivered)}/${n0(p.probe.expected)}`,
          f(p.probe.latency.p50),
          f(p.probe.latency.p99),
          f(p.probe.latency.max),
          p.phase === "baseline" || base === undefined || !(base > 0) ? "" : f(p.probe.latency.p99 / base),
          n0(p.probe.tailMs),
          n0(p.drops),
          p.abuser ? n0(p.abuser.sent) : "",
          p.abuser ? n0(p.abuser.connects) : "",
          p.abuser
            ? `${n0(p.abuser.connectFailures)}${
                Object.keys(p.abuser.connectErrors).length
                  ? ` (${Object.entries(p.abuser.connectErrors)
                      .map(([k, v]) => `${v}× ${k.replace(/\|/g, "/")}`)
                      .join("; ")})`
                  : ""
              }`
            : "",
          p.abuser
            ? Object.entries(p.abuser.closedByServer)
                .map(([k, v]) => `${v}× ${k}`)
                .join(", ") || "0"
            : "",
          p.abuser ? na(p.server.accepted) : "",
          p.abuser ? na(p.server.refused) : "",
          p.abuser ? na(p.server.disconnects) : "",
          na(p.server.statusNotifications),
          f(Math.max(...p.rss.map((x) => x.before)) / MIB, 1),
          f(p.rssGrowthMax / MIB, 1),
          n0(p.logRecords),
          Object.entries(p.cpu)
            .map(([k, v]) => `${k} ${f(v, 0)}`)
            .join(", "),
        ]);
      }),
      [0, 1, 13, 14, 22],
    ),
  );
}

const OWN_FILES = ["run.json", "REPORT.md", "fanout.json", "latency.svg", "echo.json", "memory.json", "scaling.json", "ramp.json", "drain.json", "abuse.json"];

/** Writes `<scenario>.json`, `run.json`, `latency.svg` and `REPORT.md` into `dir` (and removes those of an earlier run this one did not make). */
export async function writeResults(dir: string, r: RunResults): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const files: [string, string][] = [
    ["run.json", JSON.stringify({ ...r, figures: figures(r) }, null, 2)],
    ["REPORT.md", renderMarkdown(r)],
  ];
  if (r.fanout.length > 0) {
    files.push(["fanout.json", JSON.stringify({ cells: r.fanout, profiles: r.profiles }, null, 2)]);
    files.push(["latency.svg", renderChart(r)]);
  }
  if (r.echo.length > 0) files.push(["echo.json", JSON.stringify(r.echo, null, 2)]);
  if (r.memory.length > 0) files.push(["memory.json", JSON.stringify(r.memory, null, 2)]);
  if (r.scaling) files.push(["scaling.json", JSON.stringify(r.scaling, null, 2)]);
  if (r.ramp) files.push(["ramp.json", JSON.stringify(r.ramp, null, 2)]);
  if (r.drain) files.push(["drain.json", JSON.stringify(r.drain, null, 2)]);
  if (r.abuse.length > 0) files.push(["abuse.json", JSON.stringify(r.abuse, null, 2)]);
  for (const [name, text] of files) await writeFile(path.join(dir, name), text);
  const made = new Set(files.map(([name]) => name));
  for (const name of OWN_FILES) if (!made.has(name)) await rm(path.join(dir, name), { force: true });
  if (r.profiles.length === 0) await rm(path.join(dir, "profiles"), { recursive: true, force: true });
  return files.map(([name]) => path.join(dir, name));
}
