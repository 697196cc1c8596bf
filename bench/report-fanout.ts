import type { ProfileLine } from "./lib/cpuprofile.js";
import { f, md, n0, table } from "./lib/format.js";
import { mergeReadings, readingText } from "./lib/machine.js";
import { isNoisy, shortSpread, spreadOf, spreadText } from "./lib/spread.js";
import { BURST_WINDOW, type Basis, cell, type Paired, pairedP99, pairedSaturated, phaseOf, sizesOf, windowsOf } from "./report-goals.js";
import type { Figure, RunResults } from "./report.js";
import type { FanoutCell, SaturatedPhase, TargetProfile } from "./scenarios/fanout.js";
import { AFTER_OF, BEFORE_TARGETS, type TargetName } from "./targets.js";

/** The fan-out's figures of earlier issues (Socket.IO ÷ bare ws, history on ÷ off, the stacks ÷ one instance) and its tables and profiles. */

/** CPU of the serving processes: not the load generator, the abuser or the bench itself. */
export const cpuServer = (cpu: Record<string, number>) =>
  Object.entries(cpu)
    .filter(([k]) => k !== "generator" && k !== "abuser" && !k.startsWith("bench"))
    .reduce((s, [, v]) => s + v, 0);

/** The largest fan-out size measured on both targets. */
function commonSize(r: RunResults, a: TargetName, b: TargetName): number | undefined {
  return [...sizesOf(r)].reverse().find((s) => cell(r, a, s) && cell(r, b, s));
}

/** Met when both bases meet the goal; noisy when either's trials disagree by more than 20%. */
function ratioFigure(r: RunResults, name: string, a: TargetName, b: TargetName, window: number, goal: number | undefined, reference = ""): Figure | undefined {
  const size = commonSize(r, a, b);
  if (size === undefined) return undefined;
  const fps = pairedSaturated(r, a, b, size, window, "framesPerSec");
  const cpu = pairedSaturated(r, a, b, size, window, "framesPerCpuSec");
  if (!fps?.spread || !cpu?.spread) return undefined;
  const noisy = isNoisy(fps.spread) || isNoisy(cpu.spread);
  const bySize = (basis: Basis) =>
    sizesOf(r)
      .map((s) => f(pairedSaturated(r, a, b, s, window, basis)?.spread?.median))
      .join(" / ");
  return {
    name: `${name}, window ${window}`,
    value: cpu.spread.median,
    display: `${f(fps.spread.median)}× frames/s; ${f(cpu.spread.median)}× per server CPU-second`,
    goal: goal === undefined ? "(for reference)" : `≥ ${goal}×`,
    reference,
    met: goal === undefined ? undefined : fps.spread.median >= goal && cpu.spread.median >= goal,
    noisy: goal !== undefined && noisy,
    spread: `frames/s ${spreadText(fps.spread)}; per CPU-s ${spreadText(cpu.spread)}`,
    load: readingText(mergeReadings([fps.machine, cpu.machine])),
    basis: `saturated, ${n0(size)} clients, ${window} in flight (median of paired trials); at ${sizesOf(r)
      .map((s) => n0(s))
      .join(" / ")} clients: ${bySize("framesPerSec")} frames/s, ${bySize("framesPerCpuSec")} per CPU-s`,
  };
}

/**
 * History on ÷ off: a ÷ b frames a second, the median of the paired trials
 * at every size; met on frames/s.
 */
function historyFigure(r: RunResults, on: TargetName, off: TargetName, what: string, window: number): Figure | undefined {
  const paired = sizesOf(r).map((s) => pairedSaturated(r, on, off, s, window, "framesPerSec"));
  const all = spreadOf(
    sizesOf(r).flatMap((s) => {
      const x = phaseOf(cell(r, on, s), window);
      const y = phaseOf(cell(r, off, s), window);
      return x && y ? x.trials.flatMap((t, k) => (y.trials[k] ? [t.framesPerSec / y.trials[k]!.framesPerSec] : [])) : [];
    }),
  );
  if (!all) return undefined;
  const cpu = pairedSaturated(r, on, off, commonSize(r, on, off) ?? 0, window, "framesPerCpuSec");
  return {
    name: `Socket.IO fan-out, ${what}, history on ÷ off (HISTORY_SIZE default ÷ 0), window ${window}`,
    value: all.median,
    display: `${f(all.median)}× frames/s (every size); ${f(cpu?.spread?.median)}× per server CPU-second at the largest`,
    goal: "≥ 0.9×",
    reference: "",
    met: all.median >= 0.9,
    noisy: isNoisy(all),
    spread: spreadText(all),
    load: readingText(mergeReadings(paired.map((p) => p?.machine))),
    basis: `saturated trials at every size, each ${on} trial right before its ${off} twin (a load swing hits both); met on frames/s; by size ${paired.map((p) => f(p?.spread?.median)).join(" / ")}`,
  };
}

/** The fan-out figures of earlier issues, at each window. */
export function fanoutFigures(r: RunResults): Figure[] {
  const out: (Figure | undefined)[] = [];
  for (const w of windowsOf(r)) {
    out.push(ratioFigure(r, "Socket.IO fan-out, 1 instance ÷ bare ws baseline", "sio-1", "raw", w, 0.8, "stock Socket.IO ≈ 0.6×"));
    out.push(ratioFigure(r, "stock Socket.IO (nothing of ours) ÷ bare ws baseline", "sio-stock", "raw", w, undefined, "stock Socket.IO ≈ 0.6×"));
    out.push(historyFigure(r, "sio-1", "sio-1-nohist", "1 instance", w));
    // The Redis path (opt-in target: a stack of its own).
    if (r.fanout.some((c) => c.target === "sio-4-direct-nohist"))
      out.push(historyFigure(r, "sio-4-direct", "sio-4-direct-nohist", "4 instances + Redis, direct", w));
    out.push(ratioFigure(r, "4 instances via nginx ÷ 1 instance direct (Socket.IO)", "sio-4-nginx", "sio-1", w, 0.7));
    out.push(ratioFigure(r, "4 instances direct ÷ 1 instance direct (Socket.IO)", "sio-4-direct", "sio-1", w, undefined));
  }
  return out.filter((x): x is Figure => x !== undefined);
}

const pairedCell = (p: Paired | undefined) => shortSpread(p?.spread);

function pacedRows(r: RunResults): { header: string[]; rows: string[][] } {
  const header = ["target", "clients", "broadcasts", "p50 ms", "p99 ms", "max ms", "done p50", "done p99", "p99 ÷ raw's (rounds)", "lost", "load; others"];
  const rows = r.fanout.map((c) => [
    c.target,
    n0(c.clients) + (c.connected < c.clients ? ` (${n0(c.connected)})` : ""),
    n0(c.paced.broadcasts),
    f(c.paced.latency.p50),
    f(c.paced.latency.p99),
    f(c.paced.latency.max),
    f(c.paced.completion.p50),
    f(c.paced.completion.p99),
    c.target === "raw" ? "1" : pairedCell(pairedP99(r, c.target, "raw", c.clients)),
    c.paced.incomplete ? `${c.paced.incomplete} bc` : "0",
    readingText(mergeReadings(c.paced.rounds.map((x) => x.machine))),
  ]);
  return { header, rows };
}

function saturatedRows(r: RunResults): { header: string[]; rows: string[][] } {
  const header = ["target", "clients", "window", "frames/s", "×raw", "frames/CPU-s", "×raw", "CPU srv %", "CPU gen %", "lost", "load; others"];
  const rows = r.fanout.flatMap((c: FanoutCell) =>
    c.saturated.map((p: SaturatedPhase) => {
      const lost = p.incomplete;
      const vs = (basis: Basis) => (c.target === "raw" ? "1" : pairedCell(pairedSaturated(r, c.target, "raw", c.clients, p.window, basis)));
      return [
        c.target,
        n0(c.clients),
        String(p.window),
        n0(p.framesPerSec),
        vs("framesPerSec"),
        n0(p.framesPerCpuSec),
        vs("framesPerCpuSec"),
        f(cpuServer(p.cpu), 0),
        f(p.cpu.generator, 0),
        lost ? `${lost} bc` : c.drops ? `${c.drops} drops` : "0",
        readingText(mergeReadings(p.trials.map((t) => t.machine))),
      ];
    }),
  );
  return { header, rows };
}

export function fanoutConsole(r: RunResults): string[] {
  if (r.fanout.length === 0) return [];
  const paced = pacedRows(r);
  const sat = saturatedRows(r);
  return [
    "\nFan-out, paced (one broadcast in flight, a gap after each): publish→receipt (ms), done = publish→last receiver; ÷ raw's: median (lowest–highest) of the rounds",
    table(paced.header, paced.rows),
    "\nFan-out, saturated (window = broadcasts in flight): median trial; ×raw: median (lowest–highest) of paired trials",
    table(sat.header, sat.rows),
  ];
}

export function fanoutMarkdown(r: RunResults): string[] {
  if (r.fanout.length === 0) return [];
  const o = r.options;
  const L = ["", "## Fan-out", ""];
  L.push(
    `Each size: a paced phase in ${o.trials} rounds (one broadcast in flight with ${o.pacedGapMs} ms after it, at most ${o.pacedCount} a target or ${o.pacedMaxMs / 1000} s in all, at least 3 a round: latency of every delivery, and completion = publish to last receiver), then for each window (${windowsOf(r).join(", ")} broadcasts in flight) ${o.trials} saturated trials (${o.throughputMs} ms of publishing, then until the last in flight is delivered: frames delivered a second, CPU). All targets hold their clients at once and take turns, broadcast by broadcast and trial by trial, so a load spike from elsewhere hits them alike; the median trial is shown, the ratios are medians of paired trials with their lowest and highest. frames/CPU-s = frames delivered per CPU-second of the serving processes (instances, Redis, nginx): what a core buys, whatever share of the shared machine the target got; the steadier basis for ratios here. Latency is compared with the bare ws baseline's own p99 at the same size in the same rounds. Payload ${o.payloadBytes} bytes of text. Load: 1-minute load average over the phase; others = CPU of processes outside this run, % of one core.`,
  );
  const paced = pacedRows(r);
  L.push("", "### Paced", "", md(paced.header, paced.rows, [0, 10]), "", "![latency percentiles against client count](latency.svg)");
  const sat = saturatedRows(r);
  L.push("", "### Saturated", "", md(sat.header, sat.rows, [0, 4, 6, 10]));
  L.push("", "CPU in the saturated phase (median trial), percent of one core, by process:", "");
  L.push(
    md(
      ["target", "clients", "window", "CPU by process"],
      r.fanout.flatMap((c) =>
        c.saturated.map((p) => [
          c.target,
          n0(c.clients),
          String(p.window),
          Object.entries(p.cpu)
            .map(([k, v]) => `${k} ${f(v, 0)}`)
            .join(", "),
        ]),
      ),
      [0, 3],
    ),
  );
  const failures = r.fanout.filter((c) => c.connectFailed > 0);
  if (failures.length > 0) {
    L.push("", "Connect failures:");
    for (const c of failures)
      L.push(
        `- ${c.target} @${c.clients}: ${c.connectFailed} (${Object.entries(c.connectErrors)
          .map(([k, v]) => `${v}× ${k}`)
          .join("; ")})`,
      );
  }
  return L;
}

// --- CPU profiles ----------------------------------------------------------------

const profileTitle = (p: TargetProfile) =>
  `${p.target} / ${p.process}: ${n0(p.clients)} clients, window ${p.window}, ${n0(p.framesPerSec)} frames/s and ${n0(p.framesPerCpuSec)} per server CPU-second while profiled, busy ${p.summary.busyPercent}% of samples`;
const areas = (p: TargetProfile, n = 12) =>
  p.summary.byArea
    .slice(0, n)
    .map((a) => `${a.area} ${a.percent}%`)
    .join(", ");
const line = (l: ProfileLine | undefined) => (l ? [f(l.percent, 1), `\`${l.name}\``, `\`${l.where}\``] : ["", "", ""]);

/** Before/after pairs: the --before checkout's profile and this one's, same size and window, same process role. */
function profilePairs(r: RunResults): { before: TargetProfile; after: TargetProfile }[] {
  return r.profiles.flatMap((before) => {
    if (!BEFORE_TARGETS.includes(before.target)) return [];
    const after = r.profiles.find((p) => p.target === AFTER_OF[before.target] && p.clients === before.clients && p.window === before.window);
    return after ? [{ before, after }] : [];
  });
}

export function profilesMarkdown(r: RunResults): string[] {
  if (r.profiles.length === 0) return [];
  const L = ["", "## CPU profiles (saturated fan-out at the largest size and window; before/after pairs at window 1 too)", ""];
  L.push(
    "Taken over the inspector (Profiler.start/stop around one extra saturated phase, 250 µs sampling), saved as `profiles/<target>-<process>-w<window>.cpuprofile` (open in Chrome DevTools or speedscope). Self time, idle excluded.",
  );
  const pairs = profilePairs(r);
  if (pairs.length > 0) {
    L.push("", "### Before / after", "");
    L.push(
      `The --before checkout (\`${r.options.before}\`) and this one, side by side in the same run: same clients, same window, the same publisher; top functions by self time. Window ${BURST_WINDOW} or more: a broadcast burst; window 1: one broadcast at a time.`,
    );
    for (const { before, after } of pairs) {
      L.push("", `#### ${AFTER_OF[before.target]}, window ${before.window}: before (${before.target}) / after`, "");
      L.push(`- before: ${profileTitle(before)}; by area: ${areas(before)}`);
      L.push(`- after: ${profileTitle(after)}; by area: ${areas(after)}`);
      L.push("");
      const n = Math.max(before.summary.top.length, after.summary.top.length);
      L.push(
        md(
          ["#", "before self %", "function", "where", "after self %", "function", "where"],
          Array.from({ length: n }, (_, i) => [String(i + 1), ...line(before.summary.top[i]), ...line(after.summary.top[i])]),
          [2, 3, 5, 6],
        ),
      );
    }
  }
  for (const p of r.profiles) {
    L.push("", `### ${profileTitle(p)}`, "", `By area: ${areas(p)}`, "");
    L.push(
      md(
        ["self %", "self ms", "function", "where"],
        p.summary.top.map((l) => [f(l.percent, 1), f(l.selfMs, 1), `\`${l.name}\``, `\`${l.where}\``]),
        [2, 3],
      ),
    );
  }
  return L;
}

export function profilesConsole(r: RunResults): string[] {
  const parts: string[] = [];
  for (const { before, after } of profilePairs(r)) {
    parts.push(`\nCPU profile before / after, ${AFTER_OF[before.target]} (${n0(before.clients)} clients, window ${before.window})`);
    parts.push(`  before: ${n0(before.framesPerCpuSec)} frames per CPU-s; ${areas(before, 6)}`);
    parts.push(`  after:  ${n0(after.framesPerCpuSec)} frames per CPU-s; ${areas(after, 6)}`);
    const n = Math.min(10, Math.max(before.summary.top.length, after.summary.top.length));
    const row = (l: ProfileLine | undefined) => (l ? [f(l.percent, 1), l.name, l.where] : ["", "", ""]);
    parts.push(
      table(
        ["before %", "function", "where", "after %", "function", "where"],
        Array.from({ length: n }, (_, i) => [...row(before.summary.top[i]), ...row(after.summary.top[i])]),
        ["r", "l", "l", "r", "l", "l"],
      ),
    );
  }
  for (const p of r.profiles) {
    if (BEFORE_TARGETS.includes(p.target) || profilePairs(r).some((x) => x.after === p)) continue;
    parts.push(`\nCPU profile ${p.target} / ${p.process} (${n0(p.clients)} clients, window ${p.window}; busy ${p.summary.busyPercent}% of samples): by area`);
    parts.push(`  ${areas(p, 8)}`);
    parts.push(
      table(
        ["self %", "function", "where"],
        p.summary.top.slice(0, 8).map((l) => [f(l.percent, 1), l.name, l.where]),
        ["r", "l", "l"],
      ),
    );
  }
  return parts;
}
