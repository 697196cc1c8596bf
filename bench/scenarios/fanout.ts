import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { isInterrupted } from "../../harness/processes.js";
import { CpuMeter } from "../../harness/procfs.js";
import { sleep } from "../../harness/timeouts.js";
import type { Fleet, FleetConnectResult } from "../generator/fleet.js";
import { summarizeProfile, type ProfileSummary } from "../lib/cpuprofile.js";
import { type Histogram, type LatencySummary, newHistogram, summarize, summarizeValues } from "../lib/hist.js";
import { Inspector } from "../lib/inspector.js";
import { MachineMeter, type MachineReading } from "../lib/machine.js";
import { rateMeter } from "../lib/progress.js";
import { Publisher } from "../publisher.js";
import { AFTER_OF, BEFORE_TARGETS, type Target, type TargetName } from "../targets.js";
import { type Ctx, Interrupted } from "./context.js";

/** One saturated trial: what the ratios pair trial by trial (the targets take turns, so trial k of each ran back to back). */
export interface Trial {
  framesPerSec: number;
  framesPerCpuSec: number;
  serverCpuPercent: number;
  /** The machine during the trial: load average, CPU of processes outside this run. */
  machine: MachineReading;
}

export interface SaturatedPhase {
  /** Broadcasts in flight. */
  window: number;
  /** Every trial, in order (the figures below are the median trial's, by frames per CPU-second). */
  trials: Trial[];
  seconds: number;
  broadcasts: number;
  incomplete: number;
  /** Broadcast frames the clients received, a second. */
  framesPerSec: number;
  broadcastsPerSec: number;
  /** CPU of the serving processes (instances, Redis, nginx), percent of one core. */
  serverCpuPercent: number;
  /**
   * Frames delivered per CPU-second of the serving processes: what a core
   * buys, whatever share of the machine the target got. On a shared machine
   * this is steadier than frames a second.
   */
  framesPerCpuSec: number;
  /** Publish to receipt, under saturation (`window` broadcasts in flight). */
  latency: LatencySummary;
  /** Percent of one core, by process role. */
  cpu: Record<string, number>;
}

/** One round of the paced phase (the targets take turns broadcast by broadcast, so round k of each ran side by side). */
export interface PacedRound {
  broadcasts: number;
  /** Publish to receipt of every delivery in the round, ms. */
  p50: number;
  p99: number;
  max: number;
  machine: MachineReading;
}

export interface FanoutCell {
  target: TargetName;
  clients: number;
  connected: number;
  connectFailed: number;
  connectErrors: Record<string, number>;
  connectTime: LatencySummary;
  /** One broadcast at a time: publish-to-receipt of every delivery, and publish-to-last-receiver; and each round's. */
  paced: { broadcasts: number; incomplete: number; latency: LatencySummary; completion: LatencySummary; rounds: PacedRound[] };
  /** One a window, smallest window first. */
  saturated: SaturatedPhase[];
  /** Clients that lost their connection during the measurement. */
  drops: number;
}

export interface TargetProfile {
  target: TargetName;
  clients: number;
  window: number;
  process: string;
  file: string;
  summary: ProfileSummary;
  /** The profiled phase's own figures (the profiler costs a little). */
  framesPerSec: number;
  framesPerCpuSec: number;
}

/** Waits for every generator child holding clients to report a broadcast delivered to all of them. */
export class Completions {
  readonly #pending = new Map<number, { t0: number; waiting: Set<number>; last: number; resolve: (us: number | undefined) => void; timer: NodeJS.Timeout }>();

  constructor(fleet: Fleet) {
    fleet.onDone = (seq, last, child) => {
      const p = this.#pending.get(seq);
      if (!p) return;
      p.waiting.delete(child);
      if (last > p.last) p.last = last;
      if (p.waiting.size === 0) {
        clearTimeout(p.timer);
        this.#pending.delete(seq);
        p.resolve(p.last - p.t0);
      }
    };
  }

  /** Resolves with the completion time (µs), or undefined when some client did not get it in time. */
  expect(seq: number, t0: number, children: number[], timeoutMs: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(seq);
        resolve(undefined);
      }, timeoutMs);
      this.#pending.set(seq, { t0, waiting: new Set(children), last: t0, resolve, timer });
    });
  }

  clear(): void {
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
  }
}

/** Timeout for one broadcast: generous, it scales with the client count. */
export const completionTimeoutMs = (clients: number) => 5_000 + clients;
/** With `window` in flight, the last of a burst waits behind the others. */
const burstTimeoutMs = (clients: number, window: number) => completionTimeoutMs(clients) * Math.max(1, window / 4);

interface Lane {
  target: Target;
  group: string;
  publisher: Publisher;
  /** Generator children holding clients of this lane (they report completions). */
  active: number[];
}

const median = <T>(xs: T[], key: (x: T) => number): T => [...xs].sort((a, b) => key(a) - key(b))[Math.floor((xs.length - 1) / 2)]!;

/**
 * Broadcast fan-out on every target side by side, at growing client counts.
 * All targets hold their clients at once; at each size, a paced phase (one
 * broadcast in flight with a gap after it, the targets taking turns: latency
 * and completion time) in `trials` rounds, and for each window `trials`
 * saturated phases per target, the targets again taking turns so that a
 * load spike from elsewhere on the machine hits them all alike; the median
 * trial is reported, and every trial and round is kept for the spreads.
 * Optionally a CPU profile of one more saturated phase per target at the
 * largest size and window.
 */
export async function runFanout(
  ctx: Ctx,
  targets: Target[],
): Promise<{ cells: FanoutCell[]; profiles: TargetProfile[]; errors: { target: TargetName; message: string }[] }> {
  const { opts, fleet, progress } = ctx;
  const cells: FanoutCell[] = [];
  const profiles: TargetProfile[] = [];
  const errors: { target: TargetName; message: string }[] = [];
  const completions = new Completions(fleet);
  const frames = rateMeter(() => fleet.live.frames);
  const status = () => `${fleet.live.open} open, ${Math.round(frames()).toLocaleString("en-US")} frames/s`;
  let lanes: Lane[] = [];
  const drop = (lane: Lane, err: unknown) => {
    if (isInterrupted()) throw new Interrupted();
    const message = (err as Error).message?.split("\n")[0] ?? String(err);
    errors.push({ target: lane.target.name, message });
    progress.log(`bench: fanout on ${lane.target.name} failed: ${message}`);
    lanes = lanes.filter((l) => l !== lane);
    lane.publisher.close();
  };
  try {
    for (const target of targets) {
      try {
        lanes.push({
          target,
          group: `fanout-${target.name}`,
          publisher: await Publisher.connect(target.kind, target.publishUrl, opts.payloadBytes),
          active: [],
        });
      } catch (err) {
        errors.push({ target: target.name, message: `publisher: ${(err as Error).message}` });
      }
    }
    for (const size of opts.sizes) {
      const conns = new Map<Lane, FleetConnectResult>();
      for (const lane of [...lanes]) {
        if (isInterrupted()) throw new Interrupted();
        const have = (await fleet.stats(false, lane.group)).open;
        progress.phase(`fanout @${size}: connecting ${lane.target.name}`, () => {
          const l = fleet.live;
          return `${l.open} open, ${l.connecting} connecting, ${l.failed} failed`;
        });
        try {
          conns.set(
            lane,
            await fleet.connect({
              group: lane.group,
              kind: lane.target.kind,
              mode: "fanout",
              urls: lane.target.clientUrls,
              count: Math.max(0, size - have),
              ratePerSec: 0,
              concurrency: 200,
              spreadAfter: opts.spreadAfter,
              reconnect: false,
              idPrefix: lane.group,
              timeoutMs: 15_000,
            }),
          );
        } catch (err) {
          drop(lane, err);
        }
      }
      await sleep(300);
      const before = new Map<Lane, number>();
      for (const lane of lanes) {
        const st = await fleet.stats(true, lane.group);
        before.set(lane, st.open);
        lane.active = st.perChild.flatMap((n, i) => (n > 0 ? [i] : []));
      }

      // Paced: one broadcast in flight at a time, the targets taking turns, in rounds.
      const pacedUs = new Map<Lane, number[]>(lanes.map((l) => [l, []]));
      const pacedIncomplete = new Map<Lane, number>(lanes.map((l) => [l, 0]));
      const pacedHist = new Map<Lane, Histogram>(lanes.map((l) => [l, newHistogram()]));
      const pacedRounds = new Map<Lane, PacedRound[]>(lanes.map((l) => [l, []]));
      const pacedDrops = new Map<Lane, number>(lanes.map((l) => [l, 0]));
      await fleet.track(ctx.nextSeq(), true);
      for (const lane of lanes) await fleet.stats(true, lane.group);
      const perRound = Math.max(1, Math.ceil(opts.pacedCount / opts.trials));
      for (let r = 0; r < opts.trials; r++) {
        progress.phase(`fanout @${size}: paced latency, round ${r + 1}/${opts.trials}, ${lanes.length} targets taking turns`, status);
        const machine = new MachineMeter().start();
        const roundStart = performance.now();
        const sent = new Map<Lane, number>(lanes.map((l) => [l, 0]));
        for (let k = 0; k < perRound && (k < 3 || performance.now() - roundStart < opts.pacedMaxMs / opts.trials); k++) {
          for (const lane of lanes) {
            if (isInterrupted()) throw new Interrupted();
            const seq = ctx.nextSeq();
            const t0 = lane.publisher.publish(seq);
            sent.set(lane, sent.get(lane)! + 1);
            const c = await completions.expect(seq, t0, lane.active, completionTimeoutMs(size));
            if (c === undefined) pacedIncomplete.set(lane, pacedIncomplete.get(lane)! + 1);
            else pacedUs.get(lane)!.push(c);
            await sleep(opts.pacedGapMs);
          }
        }
        await sleep(50);
        const reading = machine.stop();
        for (const lane of lanes) {
          const st = await fleet.stats(true, lane.group);
          pacedHist.get(lane)!.add(st.latency);
          pacedDrops.set(lane, pacedDrops.get(lane)! + st.drops);
          const l = summarize(st.latency);
          pacedRounds.get(lane)!.push({ broadcasts: sent.get(lane)!, p50: l.p50, p99: l.p99, max: l.max, machine: reading });
        }
      }

      // Saturated: for each window, `trials` rounds, each target in turn.
      const trials = new Map<Lane, Map<number, (SaturatedPhase & { drops: number })[]>>(lanes.map((l) => [l, new Map(opts.windows.map((w) => [w, []]))]));
      for (const window of opts.windows) {
        for (let r = 0; r < opts.trials; r++) {
          for (const lane of lanes) {
            if (isInterrupted()) throw new Interrupted();
            progress.phase(`fanout @${size}: saturated, window ${window}, trial ${r + 1}/${opts.trials}, ${lane.target.name}`, status);
            trials
              .get(lane)!
              .get(window)!
              .push(await saturate(ctx, lane, completions, size, window));
          }
        }
      }

      for (const lane of lanes) {
        const conn = conns.get(lane);
        const byWindow = [...trials.get(lane)!.entries()].map(([window, runs]) => {
          const { drops: _, ...mid } = median(runs, (t) => t.framesPerCpuSec);
          const phase: SaturatedPhase = { ...mid, window, trials: runs.map((t) => t.trials[0]!) };
          return { phase, drops: runs.reduce((n, t) => n + t.drops, 0) };
        });
        const cell: FanoutCell = {
          target: lane.target.name,
          clients: size,
          connected: before.get(lane) ?? 0,
          connectFailed: conn?.failed ?? 0,
          connectErrors: conn?.errors ?? {},
          connectTime: conn ? summarize(conn.connectTimes) : summarize(newHistogram()),
          paced: {
            broadcasts: pacedUs.get(lane)!.length + pacedIncomplete.get(lane)!,
            incomplete: pacedIncomplete.get(lane)!,
            latency: summarize(pacedHist.get(lane)!),
            completion: summarizeValues(pacedUs.get(lane)!),
            rounds: pacedRounds.get(lane)!,
          },
          saturated: byWindow.map((b) => b.phase),
          drops: pacedDrops.get(lane)! + byWindow.reduce((n, b) => n + b.drops, 0),
        };
        cells.push(cell);
        const perCpu = cell.saturated
          .map((p) => `window ${p.window}: ${p.trials.map((t) => Math.round(t.framesPerCpuSec).toLocaleString("en-US")).join(", ")}`)
          .join("; ");
        progress.log(
          `  ${lane.target.name} @${size}: frames per server CPU-s ${perCpu}; paced p50 ${cell.paced.latency.p50} ms p99 ${cell.paced.latency.p99} ms, completion p50 ${cell.paced.completion.p50} ms${cell.connectFailed ? `, ${cell.connectFailed} connects failed` : ""}`,
        );
      }
    }

    if (opts.profile) {
      const size = opts.sizes[opts.sizes.length - 1]!;
      const largest = opts.windows[opts.windows.length - 1]!;
      const smallest = opts.windows[0]!;
      const running = new Set(lanes.map((l) => l.target.name));
      /** A before target and its twin (both running) are profiled at the smallest window too: what a lone broadcast costs each. */
      const paired = (t: TargetName) =>
        (BEFORE_TARGETS.includes(t) && running.has(AFTER_OF[t]!)) || BEFORE_TARGETS.some((b) => AFTER_OF[b] === t && running.has(b));
      // History off is there for its frames a second beside sio-1, not for a profile of its own.
      const runs = lanes
        .filter((l) => !l.target.name.endsWith("-nohist"))
        .flatMap((lane) => (paired(lane.target.name) && smallest !== largest ? [smallest, largest] : [largest]).map((window) => ({ lane, window })));
      for (const { lane, window } of runs) {
        if (isInterrupted()) throw new Interrupted();
        const inspectors = pickProfiled(lane.target);
        if (inspectors.length === 0) continue;
        progress.phase(`fanout @${size}: CPU profile of a saturated phase, window ${window}, ${lane.target.name}`, status);
        try {
          const sessions = await Promise.all(inspectors.map(async (i) => ({ ...i, insp: await Inspector.connect(i.url) })));
          await Promise.all(sessions.map((s) => s.insp.startProfile(250)));
          const phase = await saturate(ctx, lane, completions, size, window);
          const dir = path.join(ctx.out, "profiles");
          // Profiles of an earlier run would read as this one's.
          if (profiles.length === 0) await rm(dir, { recursive: true, force: true });
          await mkdir(dir, { recursive: true });
          for (const s of sessions) {
            const profile = await s.insp.stopProfile();
            s.insp.close();
            const file = path.join(dir, `${lane.target.name}-${s.name}-w${window}.cpuprofile`);
            await writeFile(file, JSON.stringify(profile));
            profiles.push({
              target: lane.target.name,
              clients: size,
              window,
              process: s.name,
              file,
              // The before checkout's server code is ours too.
              summary: summarizeProfile(profile, 15, opts.before && BEFORE_TARGETS.includes(lane.target.name) ? [opts.before] : []),
              framesPerSec: phase.framesPerSec,
              framesPerCpuSec: phase.framesPerCpuSec,
            });
          }
        } catch (err) {
          errors.push({ target: lane.target.name, message: `profile: ${(err as Error).message}` });
        }
      }
    }
  } finally {
    completions.clear();
    for (const lane of lanes) lane.publisher.close();
    progress.phase("fanout: closing clients", () => `${fleet.live.open} open`);
    for (const t of targets) await fleet.closeAll(`fanout-${t.name}`);
  }
  return { cells, profiles, errors };
}

/** Which server processes to profile: the one the publisher uses, and one that only receives through Redis. */
function pickProfiled(target: Target): { name: string; url: string }[] {
  const all = target.inspectors();
  return all.length <= 2 ? all : all.slice(0, 2);
}

/** `window` broadcasts in flight for `throughputMs`, then until the last is delivered: one trial. */
async function saturate(ctx: Ctx, lane: Lane, completions: Completions, size: number, window: number): Promise<SaturatedPhase & { drops: number }> {
  const { opts, fleet } = ctx;
  const { target, publisher, active, group } = lane;
  const cpu = new CpuMeter(() => ({ ...target.processes(), generator: fleet.pids, "bench (publisher)": [process.pid] }));
  const machine = new MachineMeter();
  let seq = ctx.nextSeq();
  await fleet.track(seq, true, group);
  await fleet.stats(true, group);
  let inflight = 0;
  let done = 0;
  let incomplete = 0;
  machine.start();
  cpu.start();
  const t0 = performance.now();
  const deadline = t0 + opts.throughputMs;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (inflight < window && performance.now() < deadline && !isInterrupted()) {
        if (done + incomplete + inflight > 0) seq = ctx.nextSeq();
        const s = seq;
        const published = publisher.publish(s);
        inflight++;
        void completions.expect(s, published, active, burstTimeoutMs(size, window)).then((c) => {
          inflight--;
          if (c === undefined) incomplete++;
          else done++;
          if (inflight === 0 && (performance.now() >= deadline || isInterrupted())) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const seconds = (performance.now() - t0) / 1000;
  const cpuUse = cpu.stop();
  const reading = machine.stop();
  const s = await fleet.stats(true, group);
  const serverCpu = Object.entries(cpuUse)
    .filter(([k]) => k !== "generator" && k !== "bench (publisher)")
    .reduce((n, [, v]) => n + v, 0);
  const serverCpuPercent = Math.round(serverCpu * 10) / 10;
  const framesPerCpuSec = serverCpu > 0 ? s.frames / seconds / (serverCpu / 100) : NaN;
  return {
    window,
    trials: [{ framesPerSec: s.frames / seconds, framesPerCpuSec, serverCpuPercent, machine: reading }],
    serverCpuPercent,
    framesPerCpuSec,
    seconds: Math.round(seconds * 100) / 100,
    broadcasts: done + incomplete,
    incomplete,
    framesPerSec: s.frames / seconds,
    broadcastsPerSec: done / seconds,
    latency: summarize(s.latency),
    cpu: cpuUse,
    drops: s.drops,
  };
}
