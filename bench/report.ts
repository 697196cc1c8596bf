import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { f, KIB, MIB, md, n0, round, table } from "./lib/format.js";
import { lineChart, type Series } from "./lib/svg.js";
import type { Options } from "./options.js";
import type { AbuseCell, AbusePhase, AbusePhaseName } from "./scenarios/abuse.js";
import type { AttackCell } from "./scenarios/abuse-attacks.js";
import type { DrainResult } from "./scenarios/drain.js";
import type { EchoCell } from "./scenarios/echo.js";
import type { FanoutCell, TargetProfile } from "./scenarios/fanout.js";
import type { MemoryCell } from "./scenarios/memory.js";
import type { RampResult } from "./scenarios/ramp.js";
import type { ScalingResult } from "./scenarios/scaling.js";
import { scalingConsole, scalingMarkdown } from "./report-scaling.js";
import type { Footprints } from "./lib/footprint.js";
import { type MachineReading, readingText } from "./lib/machine.js";
import { attacksConsole, attacksMarkdown } from "./report-attacks.js";
import { cpuServer, fanoutConsole, fanoutFigures, fanoutMarkdown, profilesConsole, profilesMarkdown } from "./report-fanout.js";
import { goalsConsole, goalsMarkdown } from "./report-goals.js";
import { memoryConsole, memoryMarkdown } from "./report-memory.js";
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
  /** The abuse scenario's replay and address attacks through nginx, a cell a stack (before, after). */
  abuseAttacks: AttackCell[];
  /** The machine over each scenario (load average, CPU of others). */
  machineByScenario: Record<string, MachineReading>;
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
  /** Trials more than 20% apart: neither met nor not met. */
  noisy?: boolean;
  /** Lowest / median / highest of the trials, or "one measurement". */
  spread: string;
  /** The machine's load over the measurement. */
  load: string;
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

const statusText = (x: Figure) => (x.noisy ? "noisy" : x.met === undefined ? "" : x.met ? "met" : "not met");
/** The load over a scenario that ran once: its figures are one measurement each. */
const once = (r: RunResults, scenario: string) => ({ spread: "one measurement", load: readingText(r.machineByScenario[scenario]) });

/** The figures of earlier issues, each measured in this run (issue 14's goals have a table of their own: report-goals.ts). */
export function figures(r: RunResults): Figure[] {
  const out: Figure[] = fanoutFigures(r);
  if (r.ramp) {
    out.push({
      name: "most concurrent clients held via nginx (4 instances) without errors",
      value: r.ramp.heldWithoutErrors,
      display: n0(r.ramp.heldWithoutErrors),
      goal: "(largest found)",
      reference: "",
      met: undefined,
      ...once(r, "ramp"),
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
      ...once(r, "ramp"),
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
      ...once(r, "drain"),
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
        ...once(r, "abuse"),
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
      ...once(r, "abuse"),
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

/** The table printed at the end of a run (stdout). */
export function renderConsole(r: RunResults): string {
  const parts: string[] = [];
  parts.push(`ws-broadcast-service bench (${r.preset}), ${r.startedAt}, ${round(r.durationSec, 0)} s, ${r.machine.cores} cores, node ${r.machine.node}`);
  if (r.machine.busy.length > 0)
    parts.push(`NOTE: the machine was busy during the run (${r.machine.busy.join("; ")}): absolute figures are noisy, compare the ratios.`);
  parts.push(...fanoutConsole(r));
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
  parts.push(...memoryConsole(r));
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
  parts.push(...attacksConsole(r));
  const figs = figures(r);
  if (figs.length > 0) {
    parts.push("\nOther figures (ratios from this run: median of paired trials; noisy = trials more than 20% apart)");
    parts.push(
      table(
        ["figure", "measured", "trials min / median / max (n)", "load; others", "goal", "status"],
        figs.map((x) => [x.name, x.display, x.spread, x.load, x.goal, statusText(x)]),
        ["l", "l", "l", "l", "l", "l"],
      ),
    );
  }
  parts.push(...goalsConsole(r));
  parts.push(...profilesConsole(r));
  if (r.errors.length > 0) {
    parts.push("\nErrors");
    for (const e of r.errors) parts.push(`  ${e.scenario} ${e.target}: ${e.message}`);
  }
  return parts.join("\n");
}

const COLORS: Record<TargetName, string> = {
  raw: "#444444",
  "sio-stock": "#e377c2",
  "ws-1-before": "#aec7e8",
  "ws-1": "#1f77b4",
  "sio-1-before": "#ffbb78",
  "sio-1": "#d62728",
  "sio-1-nohist": "#ff9896",
  "sio-4-direct": "#2ca02c",
  "sio-4-direct-nohist": "#98df8a",
  "sio-4-nginx-before": "#c5b0d5",
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
  L.push(...goalsMarkdown(r));
  L.push("");
  L.push("## Other figures");
  L.push("");
  L.push(
    "Ratios: medians of paired trials at the largest size both targets ran, with the lowest / median / highest trial; noisy when the trials are more than 20% apart. Load: the machine's 1-minute load average over the measurement; others = CPU of processes outside this run, % of one core.",
  );
  L.push("");
  L.push(
    md(
      ["figure", "measured", "trials min / median / max (n)", "load; others", "goal", "reference", "status", "basis"],
      figures(r).map((x) => [x.name, x.display, x.spread, x.load, x.goal, x.reference, statusText(x) === "not met" ? "**not met**" : statusText(x), x.basis]),
      [0, 1, 2, 3, 4, 5, 6, 7],
    ),
  );
  L.push("");
  L.push("## Targets");
  L.push("");
  for (const t of TARGET_NAMES) if (r.fanout.some((c) => c.target === t) || r.memory.some((m) => m.target === t)) L.push(`- \`${t}\`: ${TARGET_LABELS[t]}`);
  L.push(...fanoutMarkdown(r));
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
  L.push(...memoryMarkdown(r));
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
  L.push(...attacksMarkdown(r));
  L.push(...profilesMarkdown(r));
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
      ["figure", "measured", "load; others", "goal", "met", "basis"],
      abuseFigures(r).map((x) => [x.name, x.display, x.load, x.goal, x.met === undefined ? "" : x.met ? "met" : "**not met**", x.basis]),
      [0, 1, 2, 3, 4, 5],
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

const OWN_FILES = [
  "run.json",
  "REPORT.md",
  "fanout.json",
  "latency.svg",
  "echo.json",
  "memory.json",
  "scaling.json",
  "ramp.json",
  "drain.json",
  "abuse.json",
  "abuse-attacks.json",
];

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
  if (r.abuseAttacks.length > 0) files.push(["abuse-attacks.json", JSON.stringify(r.abuseAttacks, null, 2)]);
  for (const [name, text] of files) await writeFile(path.join(dir, name), text);
  const made = new Set(files.map(([name]) => name));
  for (const name of OWN_FILES) if (!made.has(name)) await rm(path.join(dir, name), { force: true });
  if (r.profiles.length === 0) await rm(path.join(dir, "profiles"), { recursive: true, force: true });
  return files.map(([name]) => path.join(dir, name));
}
