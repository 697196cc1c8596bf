import { isInterrupted } from "../../harness/processes.js";
import { CpuMeter, tcpCounters, tcpSockstat } from "../../harness/procfs.js";
import { sleep } from "../../harness/timeouts.js";
import { type Footprints, readFootprints, rssGrowthPerConnection } from "../lib/footprint.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import { collectGarbageIn } from "../lib/inspector.js";
import { Publisher } from "../publisher.js";
import type { ClusterHost, Target, TargetName } from "../targets.js";
import { type Ctx, Interrupted } from "./context.js";

export interface RampStep {
  /** ramp: rising rate; fill: the last clean rate, until an error. */
  phase: "ramp" | "fill";
  ratePerSec: number;
  attempted: number;
  opened: number;
  failed: number;
  achievedPerSec: number;
  connect: LatencySummary;
  /** Open connections after the step. */
  open: number;
  errors: Record<string, number>;
}

export interface RampResult {
  target: TargetName;
  steps: RampStep[];
  /** Open connections after the last step with no failed connect and no drop (ramp or fill), still open after the hold. */
  heldWithoutErrors: number;
  peakOpen: number;
  /** Highest step rate with no error and p99 connect ≤ 1 s. */
  maxCleanRate: number;
  stoppedBecause: string;
  /** Why the fill (after a ramp stopped on slowness) stopped. */
  fillStoppedBecause: string | undefined;
  hold: RampHold;
  /**
   * Every process before the ramp and at its peak (after the hold): RSS,
   * descriptors and the descriptor limit, by role (instances, nginx master and
   * workers, redis, generator): the per-process arithmetic of where it stops.
   */
  footprint: { before: Footprints; peak: Footprints; connections: number; rssPerConnection: Record<string, number> };
  /**
   * The kernel's failure counters over the ramp (their changes, the ones that
   * moved; the whole machine's network namespace counts) and its TCP sockets
   * at the peak (in use, TIME_WAIT, buffer pages).
   */
  kernel: { counters: Record<string, number>; sockstat: Record<string, number> };
  /** nginx's error.log during the run, by message. */
  nginxErrors: Record<string, number>;
}

/** Counters that say why a connection failed: refused or reset handshakes, full queues, memory. */
const FAILURE_COUNTERS = [
  "Tcp.AttemptFails",
  "Tcp.EstabResets",
  "TcpExt.ListenOverflows",
  "TcpExt.ListenDrops",
  "TcpExt.TCPReqQFullDrop",
  "TcpExt.TCPReqQFullDoCookies",
  "TcpExt.SyncookiesSent",
  "TcpExt.EmbryonicRsts",
  "TcpExt.TCPAbortOnData",
  "TcpExt.TCPAbortOnMemory",
  "TcpExt.TCPAbortOnTimeout",
  "TcpExt.TCPTimeWaitOverflow",
  "TcpExt.TCPBacklogDrop",
];

/** The clients held at the top of the ramp while broadcasts go out to all of them. */
export interface RampHold {
  seconds: number;
  /** Open when the hold began. */
  clients: number;
  broadcasts: number;
  ratePerSec: number;
  /** Frames the held clients received (each broadcast × each client when nothing is lost). */
  frames: number;
  /** The fewest broadcasts one open client got: every one got all when this equals `broadcasts`. */
  fewestReceived: number | undefined;
  /** Open clients by the broadcasts each got (count → clients). */
  receivedBy: Record<string, number>;
  /** Broadcasts that reached clients not counted open (a connect that failed late, a drop). */
  receivedByNotOpen: number;
  /** Broadcasts jumped over (a later one arrived first), summed over the clients. */
  skipped: number;
  duplicates: number;
  openAfter: number;
  drops: number;
  /** Publish to receipt of every delivery. */
  latency: LatencySummary;
  /** Percent of one core by role during the hold. */
  cpu: Record<string, number>;
}

const P99_LIMIT_MS = 1_000;

/**
 * Connection ramp: steps of `rampStepMs` at a rate growing by `rampFactor`,
 * every connection kept, until a connect fails, the step's p99 connect time
 * passes 1 s, or `rampMax` (bounded by the generator's descriptors) is
 * reached. If it stopped on slowness, a fill at the last clean rate until a
 * connect fails: the most concurrent clients held without errors. Then the
 * hold: broadcasts at `rampHoldRate` for `rampHoldMs` to every client held,
 * each client's receipts counted (are they all still there, and does every
 * one get every broadcast?), and every process's memory and descriptors at
 * the peak against before the ramp.
 */
export async function runRamp(ctx: Ctx, host: ClusterHost): Promise<RampResult> {
  const { opts, fleet, progress } = ctx;
  const target = host.targets[0]!;
  const group = `ramp-${target.name}`;
  await fleet.stats(true, group);
  const max = Math.min(opts.rampMax, fleet.capacity);
  const steps: RampStep[] = [];
  let total = 0;
  let held = 0;
  let maxCleanRate = 0;
  const capped = max < opts.rampMax ? `the generator's capacity (${fleet.capacity} connections)` : `--ramp-max ${opts.rampMax}`;
  let stoppedBecause = `reached ${capped}`;
  let fillStoppedBecause: string | undefined;
  const roles = (): Record<string, number[]> => ({
    ...host.roles(),
    generator: fleet.pids,
  });
  // Garbage of earlier scenarios is not the ramp's: a full GC first, when the instances have an inspector.
  await collectGarbageIn(target.inspectors());
  const before = readFootprints(roles());
  const counters0 = tcpCounters();

  /** One step: `count` connections at `rate`; answers whether it was clean and why not. */
  const step = async (phase: "ramp" | "fill", rate: number): Promise<{ ok: boolean; errorFree: boolean; why: string }> => {
    const count = Math.min(Math.round((rate * opts.rampStepMs) / 1000), max - total);
    progress.phase(`${phase} ${target.name}: ${Math.round(rate)}/s, ${total} → ${total + count}`, () => {
      const l = fleet.live;
      return `${l.open} open, ${l.connecting} connecting, ${l.failed} failed`;
    });
    const r = await fleet.connect({
      group,
      kind: target.kind,
      mode: "idle",
      urls: target.clientUrls,
      count,
      ratePerSec: rate,
      concurrency: Math.max(500, Math.round(rate)),
      spreadAfter: opts.spreadAfter,
      reconnect: false,
      idPrefix: "ramp",
      timeoutMs: 10_000,
    });
    total += count;
    const s = await fleet.stats(false, group);
    const st: RampStep = {
      phase,
      ratePerSec: Math.round(rate),
      attempted: count,
      opened: r.opened,
      failed: r.failed,
      achievedPerSec: Math.round(r.opened / (r.elapsedMs / 1000)),
      connect: summarize(r.connectTimes),
      open: s.open,
      errors: r.errors,
    };
    steps.push(st);
    progress.log(
      `  ${phase} ${target.name}: ${st.ratePerSec}/s asked, ${st.achievedPerSec}/s done, p99 ${st.connect.p99} ms, ${st.failed} failed, ${st.open} open`,
    );
    const errorFree = r.failed === 0 && s.drops === 0;
    const why =
      r.failed > 0
        ? `${r.failed} connects failed at ${st.ratePerSec}/s with ${s.open} open (${Object.entries(r.errors)
            .slice(0, 3)
            .map(([k, v]) => `${v}× ${k}`)
            .join("; ")})`
        : s.drops > 0
          ? `${s.drops} connections dropped with ${s.open} open`
          : `p99 connect ${st.connect.p99} ms > ${P99_LIMIT_MS} ms at ${st.ratePerSec}/s`;
    if (errorFree) held = s.open;
    return { ok: errorFree && st.connect.p99 <= P99_LIMIT_MS, errorFree, why };
  };

  try {
    // The ramp: the rate grows until an error or a p99 connect time over 1 s.
    let rate = opts.rampStartRate;
    let errorFree = true;
    while (total < max) {
      if (isInterrupted()) throw new Interrupted();
      const r = await step("ramp", rate);
      if (!r.ok) {
        stoppedBecause = r.why;
        errorFree = r.errorFree;
        break;
      }
      maxCleanRate = Math.max(maxCleanRate, Math.round(rate));
      rate *= opts.rampFactor;
    }
    // The fill: if it stopped on slowness, not errors, keep adding at the last clean rate
    // until an error: the most concurrent clients held.
    if (errorFree && total < max) {
      fillStoppedBecause = `reached ${capped}`;
      const fillRate = Math.max(maxCleanRate, opts.rampStartRate);
      while (total < max) {
        if (isInterrupted()) throw new Interrupted();
        const r = await step("fill", fillRate);
        if (!r.errorFree) {
          fillStoppedBecause = r.why;
          break;
        }
      }
    }
    const hold = await holdWhileBroadcasting(ctx, target, group, roles);
    if (hold.drops > 0 || hold.openAfter < held) held = Math.min(held, hold.openAfter);
    await collectGarbageIn(target.inspectors());
    const peak = readFootprints(roles());
    const counters1 = tcpCounters();
    const moved = FAILURE_COUNTERS.flatMap((k) => {
      const d = (counters1[k] ?? 0) - (counters0[k] ?? 0);
      return d !== 0 ? [[k, d] as const] : [];
    });
    return {
      target: target.name,
      steps,
      heldWithoutErrors: held,
      peakOpen: Math.max(0, ...steps.map((s) => s.open)),
      maxCleanRate,
      stoppedBecause,
      fillStoppedBecause,
      hold,
      footprint: { before, peak, connections: hold.openAfter, rssPerConnection: rssGrowthPerConnection(before, peak, hold.openAfter) },
      kernel: { counters: Object.fromEntries(moved), sockstat: tcpSockstat() },
      nginxErrors: host.nginxErrors(),
    };
  } finally {
    progress.phase(`ramp ${target.name}: closing`, () => `${fleet.live.open} open`);
    await fleet.closeAll(group);
  }
}

/**
 * Broadcasts at `rampHoldRate` a second for `rampHoldMs` to the clients the
 * ramp holds (published through the target's own client path), then waits
 * (bounded) until each has arrived everywhere, and counts per client.
 */
async function holdWhileBroadcasting(ctx: Ctx, target: Target, group: string, roles: () => Record<string, number[]>): Promise<RampHold> {
  const { opts, fleet, progress } = ctx;
  const count = Math.max(1, Math.round((opts.rampHoldMs / 1000) * opts.rampHoldRate));
  const clients = (await fleet.stats(true, group)).open;
  progress.phase(`ramp ${target.name}: holding ${clients} clients, ${count} broadcasts at ${opts.rampHoldRate}/s`, () => {
    const l = fleet.live;
    return `${l.open} open, ${l.frames.toLocaleString("en-US")} frames`;
  });
  const publisher = await Publisher.connect(target.kind, target.publishUrl, opts.payloadBytes);
  const cpu = new CpuMeter(roles);
  const t0 = performance.now();
  try {
    const first = ctx.nextSeq();
    await fleet.track(first, false, group);
    cpu.start();
    for (let k = 0; k < count; k++) {
      if (isInterrupted()) throw new Interrupted();
      const due = t0 + (k * 1000) / opts.rampHoldRate;
      if (due > performance.now()) await sleep(due - performance.now());
      publisher.publish(k === 0 ? first : ctx.nextSeq());
    }
    // Until every open client has every broadcast (or nothing more comes for a while).
    const deadline = performance.now() + 30_000 + clients;
    let s = await fleet.stats(false, group);
    while (performance.now() < deadline && s.frames < count * s.open) {
      if (isInterrupted()) throw new Interrupted();
      await sleep(250);
      s = await fleet.stats(false, group);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpuUse = cpu.stop();
    const d = await fleet.delivery(group);
    const hold: RampHold = {
      seconds: Math.round(seconds * 10) / 10,
      clients,
      broadcasts: count,
      ratePerSec: opts.rampHoldRate,
      frames: s.frames,
      fewestReceived: Object.keys(d.receivedBy).length > 0 ? Math.min(...Object.keys(d.receivedBy).map(Number)) : undefined,
      receivedBy: d.receivedBy,
      receivedByNotOpen: d.receivedByNotOpen,
      skipped: d.stayed.skipped + d.moved.skipped,
      duplicates: d.stayed.duplicates + d.moved.duplicates,
      openAfter: s.open,
      drops: s.drops,
      latency: summarize(s.latency),
      cpu: cpuUse,
    };
    progress.log(
      `  hold ${target.name}: ${hold.clients} clients, ${count} broadcasts, ${hold.frames.toLocaleString("en-US")} frames, fewest a client got ${hold.fewestReceived ?? "–"}, ${hold.drops} dropped, p99 ${hold.latency.p99} ms`,
    );
    return hold;
  } finally {
    publisher.close();
  }
}
