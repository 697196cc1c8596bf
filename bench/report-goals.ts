import { f, KIB, md, n0, table } from "./lib/format.js";
import { type MachineReading, mergeReadings, readingText } from "./lib/machine.js";
import { judge, type Spread, type Status, spreadOf, spreadText } from "./lib/spread.js";
import type { RunResults } from "./report.js";
import type { FanoutCell, SaturatedPhase } from "./scenarios/fanout.js";
import { AFTER_OF, BEFORE_TARGETS, type TargetName } from "./targets.js";

/**
 * Issue 14's goals, each measured in this run: memory per idle connection,
 * Socket.IO no dearer than stock, bursts against the bare ws baseline (and
 * what batching costs a lone broadcast), paced p99 against the baseline's
 * own p99. Every ratio is a median of paired trials (trial k of one target
 * ran right before trial k of the other) with their spread and the machine's
 * load over them; trials more than 20% apart make a figure noisy.
 */

/** A window this large or larger is a burst; 1 is a lone broadcast at a time. */
export const BURST_WINDOW = 50;
const GOAL_MEMORY_KIB: Partial<Record<TargetName, number>> = { "sio-1": 8, "ws-1": 3 };
const GOAL_NO_DEARER = 1;
const GOAL_BURST = 1.3;
const GOAL_P99 = 1.2;
/** After ÷ before at window 1 at least this: batching costs a lone broadcast nothing measurable (within 5%). */
const GOAL_LONE = 0.95;

export const cell = (r: RunResults, t: TargetName, clients: number): FanoutCell | undefined => r.fanout.find((c) => c.target === t && c.clients === clients);
export const phaseOf = (c: FanoutCell | undefined, window: number): SaturatedPhase | undefined => c?.saturated.find((p) => p.window === window);
export const sizesOf = (r: RunResults): number[] => [...new Set(r.fanout.map((c) => c.clients))].sort((a, b) => a - b);
export const windowsOf = (r: RunResults): number[] => [...new Set(r.fanout.flatMap((c) => c.saturated.map((p) => p.window)))].sort((a, b) => a - b);

/** A ratio of two targets, trial by trial: its spread and the machine over every trial of both. */
export interface Paired {
  spread: Spread | undefined;
  machine: MachineReading | undefined;
}

export type Basis = "framesPerCpuSec" | "framesPerSec";

/** a ÷ b saturated, trial by trial, at one size and window. */
export function pairedSaturated(r: RunResults, a: TargetName, b: TargetName, size: number, window: number, basis: Basis): Paired | undefined {
  const x = phaseOf(cell(r, a, size), window);
  const y = phaseOf(cell(r, b, size), window);
  if (!x || !y) return undefined;
  const ratios = x.trials.flatMap((t, k) => {
    const d = y.trials[k]?.[basis];
    return d !== undefined && d > 0 ? [t[basis] / d] : [];
  });
  return { spread: spreadOf(ratios), machine: mergeReadings([...x.trials, ...y.trials].map((t) => t.machine)) };
}

/** a ÷ b paced p99, round by round (the targets took turns broadcast by broadcast), at one size. */
export function pairedP99(r: RunResults, a: TargetName, b: TargetName, size: number): Paired | undefined {
  const x = cell(r, a, size);
  const y = cell(r, b, size);
  if (!x || !y) return undefined;
  const ratios = x.paced.rounds.flatMap((round, k) => {
    const d = y.paced.rounds[k]?.p99;
    return d !== undefined && d > 0 ? [round.p99 / d] : [];
  });
  return { spread: spreadOf(ratios), machine: mergeReadings(x.paced.rounds.map((round) => round.machine)) };
}

export interface GoalRow {
  goal: string;
  measure: string;
  figure: string;
  spread: string;
  load: string;
  target: string;
  status: Status;
  note: string;
}

const ratioRow = (goal: string, measure: string, p: Paired | undefined, target?: { text: string; meets: (v: number) => boolean }): GoalRow => {
  const j = judge(p?.spread, target?.meets);
  return {
    goal,
    measure,
    figure: p?.spread ? `${f(p.spread.median)}×` : "not measured",
    spread: spreadText(p?.spread),
    load: readingText(p?.machine),
    target: target?.text ?? "(stated)",
    status: j.status,
    note: j.note,
  };
};

const k = (n: number) => (n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : n0(n));
const at = (size: number, window?: number) => `${k(size)} clients${window === undefined ? "" : `, window ${window}`}`;

function memoryRows(r: RunResults): GoalRow[] {
  const rows: GoalRow[] = [];
  for (const t of ["sio-1", "ws-1", "sio-stock", "raw"] as const) {
    const m = r.memory.find((x) => x.target === t);
    if (!m) continue;
    const s = spreadOf(m.rounds.map((x) => x.rssPerConnection / KIB));
    const goal = GOAL_MEMORY_KIB[t];
    const j = judge(s, goal === undefined ? undefined : (v) => v <= goal);
    rows.push({
      goal: "1. memory per idle connection",
      measure: `${t} (${m.transport}), RSS a connection, ${n0(m.connected)} idle clients, KiB`,
      figure: s ? `${f(s.median, 2)} KiB` : "not measured",
      spread: `${spreadText(s)}${s && s.n > 1 ? " rounds" : ""}`,
      load: readingText(mergeReadings(m.rounds.map((x) => x.machine))),
      target: goal === undefined ? "(reference)" : `≤ ${goal} KiB`,
      status: j.status,
      note: j.note,
    });
  }
  return rows;
}

/** Every goal row this run measured, in the issue's order. */
export function goalRows(r: RunResults): GoalRow[] {
  const rows: GoalRow[] = memoryRows(r);
  const sizes = sizesOf(r);
  const windows = windowsOf(r);
  const perCpu = "frames per server CPU-second";
  for (const w of windows)
    for (const size of sizes)
      rows.push(
        ratioRow(
          "2. Socket.IO no dearer than stock",
          `sio-1 ÷ sio-stock, ${perCpu}, ${at(size, w)}`,
          pairedSaturated(r, "sio-1", "sio-stock", size, w, "framesPerCpuSec"),
          {
            text: `≥ ${GOAL_NO_DEARER}×`,
            meets: (v) => v >= GOAL_NO_DEARER,
          },
        ),
      );
  for (const w of windows) {
    const burst = w >= BURST_WINDOW;
    for (const t of ["sio-1", "ws-1"] as const)
      for (const size of sizes)
        rows.push(
          ratioRow(
            burst ? "3. bursts" : "3. lone broadcast (reference)",
            `${t} ÷ raw, ${perCpu}, ${at(size, w)}`,
            pairedSaturated(r, t, "raw", size, w, "framesPerCpuSec"),
            burst ? { text: `≥ ${GOAL_BURST}×`, meets: (v) => v >= GOAL_BURST } : undefined,
          ),
        );
  }
  // What batching costs a lone broadcast and gains in a burst: this server ÷ the --before checkout's.
  for (const before of BEFORE_TARGETS) {
    const after = AFTER_OF[before]!;
    if (!r.fanout.some((c) => c.target === before)) continue;
    for (const w of windows)
      for (const size of sizes)
        rows.push(
          ratioRow(
            w === 1 ? "3. batching's cost to a lone broadcast" : "3. batching's gain (reference)",
            `${after} ÷ ${before}, ${perCpu}, ${at(size, w)}`,
            pairedSaturated(r, after, before, size, w, "framesPerCpuSec"),
            w === 1 ? { text: `≥ ${GOAL_LONE}×`, meets: (v) => v >= GOAL_LONE } : undefined,
          ),
        );
    const largest = sizes[sizes.length - 1];
    if (largest !== undefined)
      rows.push(ratioRow("3. batching's cost to a lone broadcast", `${after} ÷ ${before}, paced p99, ${at(largest)}`, pairedP99(r, after, before, largest)));
  }
  const largest = sizes[sizes.length - 1];
  if (largest !== undefined)
    for (const t of ["sio-1", "ws-1", "sio-4-nginx", "sio-stock"] as const) {
      if (!cell(r, t, largest)) continue;
      const p = pairedP99(r, t, "raw", largest);
      const goal = t === "sio-1" || t === "ws-1" ? { text: `≤ ${GOAL_P99}×`, meets: (v: number) => v <= GOAL_P99 } : undefined;
      const row = ratioRow("4. latency", `${t} ÷ raw, paced p99 publish→receipt, ${at(largest)}`, p, goal);
      const x = cell(r, t, largest)!.paced.latency.p99;
      const y = cell(r, "raw", largest)?.paced.latency.p99;
      rows.push({ ...row, measure: `${row.measure} (all rounds: ${f(x)} ms ÷ ${f(y)} ms)` });
    }
  return rows;
}

/** One verdict a goal: not met if any row is not met, else noisy if any is, else met. */
export function goalVerdicts(rows: GoalRow[]): { goal: string; status: string; counts: string }[] {
  const goals = [...new Set(rows.filter((x) => x.status !== "").map((x) => x.goal))];
  return goals.map((goal) => {
    const judged = rows.filter((x) => x.goal === goal && x.status !== "");
    const n = (s: Status) => judged.filter((x) => x.status === s).length;
    const status = n("not met") > 0 ? "not met" : n("noisy") > 0 ? "noisy" : "met";
    return { goal, status, counts: `${n("met")} met, ${n("not met")} not met, ${n("noisy")} noisy of ${judged.length}` };
  });
}

const GOAL_HEADER = ["goal", "measure", "figure", "trials min / median / max (n)", "load avg 1 min; CPU of others", "goal", "status"];
const goalCells = (x: GoalRow) => [x.goal, x.measure, x.figure, x.spread, x.load, x.target, x.note ? `${x.status} (${x.note})` : x.status];

export function goalsMarkdown(r: RunResults): string[] {
  const rows = goalRows(r);
  if (rows.length === 0) return [];
  const L = ["", "## Goals (issue 14)", ""];
  L.push(
    `Each ratio is the median of paired trials: trial k of one target ran right before trial k of the other (saturated trials, or rounds of the paced phase), so a load swing hits both. The spread is the lowest, median and highest of those trials; a figure whose trials are more than 20% apart (highest ÷ lowest > 1.2) is **noisy**: neither met nor not met (the note says whether every trial meets the goal). Load: the machine's 1-minute load average from the first trial's start to the last one's end (it counts this run's own servers and load generator: about 2 on these 2 cores when busy), and the CPU that processes outside this run used meanwhile, percent of one core (/proc/stat less this run's process tree). Memory: RSS per idle connection in each round (the first on the run's fresh processes, later ones on processes started for the round); KiB = 1024 bytes. Window: broadcasts in flight (1: one at a time, back to back, a lone broadcast; ${BURST_WINDOW}: a burst).`,
  );
  L.push("");
  L.push(md(GOAL_HEADER, rows.map(goalCells), [0, 1, 3, 4, 5, 6]));
  L.push("");
  for (const v of goalVerdicts(rows)) L.push(`- ${v.goal}: **${v.status}** (${v.counts})`);
  return L;
}

export function goalsConsole(r: RunResults): string[] {
  const rows = goalRows(r);
  if (rows.length === 0) return [];
  return [
    "\nGoals (issue 14): medians of paired trials, their spread, the machine's load; noisy = trials more than 20% apart",
    table(GOAL_HEADER, rows.map(goalCells), ["l", "l", "r", "l", "l", "l", "l"]),
    ...goalVerdicts(rows).map((v) => `  ${v.goal}: ${v.status} (${v.counts})`),
  ];
}
