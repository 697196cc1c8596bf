import { isInterrupted } from "../../harness/processes.js";
import { CpuMeter, rssBytes } from "../../harness/procfs.js";
import { sleep } from "../../harness/timeouts.js";
import { Fleet } from "../generator/fleet.js";
import type { FloodResult } from "../generator/protocol.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import { rateMeter } from "../lib/progress.js";
import { counter, delta, scrapeMetrics } from "../lib/prom.js";
import { Publisher } from "../publisher.js";
import type { ServiceInstance, Target, TargetName } from "../targets.js";
import { type Ctx, Interrupted } from "./context.js";

export type AbusePhaseName = "baseline" | "flood" | "ping";

/** What the instances counted during a phase (their GET /metrics before and after, summed over instances). */
export interface AbuseServerCounts {
  /** The abuser's messages published (Δ wbs_broadcasts_total of the transport's origin, less the probe's). */
  accepted: number | undefined;
  /** Δ wbs_rate_limited_total; undefined when the instances have no such metric. */
  refused: number | undefined;
  /** Δ wbs_rate_limit_disconnects_total; undefined when absent. */
  disconnects: number | undefined;
  /** Status notifications published (Δ wbs_broadcasts_total{origin="status"}). */
  statusNotifications: number | undefined;
}

export interface AbusePhase {
  phase: AbusePhaseName;
  /** The phase's length (the probe and the abuser), without the tail. */
  seconds: number;
  /**
   * The well-behaved probe: messages published, deliveries expected
   * (published × receivers open at the start) and made, publish-to-receipt
   * latency of every delivery, and how long after the phase the last ones
   * took to arrive (the wait is bounded: deliveries later than that are missing, not timed).
   */
  probe: { sent: number; expected: number; delivered: number; latency: LatencySummary; tailMs: number };
  receiversOpen: number;
  /** Receivers the server closed during the phase. */
  drops: number;
  /** What the abuser did (undefined in the baseline). */
  abuser: FloodResult | undefined;
  server: AbuseServerCounts;
  /** VmRSS of each instance, bytes: just before the phase, and the most seen during it (tail included). */
  rss: { instance: string; before: number; max: number }[];
  /** The largest growth of one instance during the phase (max − before), bytes. */
  rssGrowthMax: number;
  /** Percent of one core, by process role (instances, Redis, nginx, generator, abuser, probe). */
  cpu: Record<string, number>;
  /** Log records the instances wrote during the phase (each rate-limit disconnect logs a warning). */
  logRecords: number;
}

export interface AbuseCell {
  target: TargetName;
  label: string;
  transport: "ws" | "socket.io";
  receivers: number;
  connected: number;
  probeGapMs: number;
  phases: AbusePhase[];
  /** The receivers' p99 under the message flood ÷ their p99 in the baseline. */
  floodP99Ratio: number | undefined;
  /** The same under the `ping` flood. */
  pingP99Ratio: number | undefined;
  /** RSS growth of the instance that grew most during the `ping` flood, bytes. */
  pingRssGrowth: number | undefined;
  /** Whether the instances expose wbs_rate_limited_total (the server has the limits). */
  limitMetrics: boolean;
}

/** How long after a phase the probe's last messages may take to arrive: as long as the phase, 2–10 s. */
export const tailMaxMs = (phaseMs: number) => Math.min(10_000, Math.max(2_000, phaseMs));
/** A pause between phases, so one's aftermath is not the next one's start. */
export const SETTLE_MS = 200;
const RSS_SAMPLE_MS = 100;

/** VmRSS of each instance: now, and the most seen until stop() (sampled every 100 ms, and once more at the stop). */
export function watchRss(instances: ServiceInstance[]): { stop(): AbusePhase["rss"] } {
  const rss = instances.map((i) => {
    const v = rssBytes(i.pid) ?? NaN;
    return { instance: i.id, before: v, max: v };
  });
  const sample = () =>
    instances.forEach((inst, k) => {
      const v = rssBytes(inst.pid);
      if (v !== undefined && !(v <= rss[k]!.max)) rss[k]!.max = v;
    });
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  return {
    stop() {
      clearInterval(sampler);
      sample();
      return rss;
    },
  };
}

/**
 * Abuse: N receivers and one abusive client on each target (instances started
 * with the service's abuse limits at their defaults). A well-behaved probe
 * publishes one message every `abuseProbeGapMs` throughout; the receivers'
 * publish-to-receipt latency is measured in three phases: a baseline, a
 * message flood and a `ping` flood. The abuser sends as fast as its socket
 * drains and reconnects at once whenever the server cuts it, from a generator
 * process of its own (127.0.0.1: exempt from nginx's per-address limits, so
 * on the stack it meets the instances' limits). Instance RSS (VmRSS) is
 * sampled throughout; the rate-limit counters come from GET /metrics.
 */
export async function runAbuse(ctx: Ctx, targets: Target[]): Promise<{ cells: AbuseCell[]; errors: { target: TargetName; message: string }[] }> {
  const { progress } = ctx;
  const cells: AbuseCell[] = [];
  const errors: { target: TargetName; message: string }[] = [];
  if (targets.length === 0) return { cells, errors };
  progress.phase("abuse: starting the abusive client's process");
  // A process of its own: its busy event loop must not delay any receiver's timestamps.
  const attacker = await Fleet.start(1);
  try {
    for (const target of targets) {
      if (isInterrupted()) throw new Interrupted();
      try {
        cells.push(await abuseTarget(ctx, target, attacker));
      } catch (err) {
        if (isInterrupted() || err instanceof Interrupted) throw new Interrupted();
        const message = (err as Error).message?.split("\n")[0] ?? String(err);
        errors.push({ target: target.name, message });
        progress.log(`bench: abuse on ${target.name} failed: ${message}`);
      }
    }
  } finally {
    await attacker.stop().catch(() => undefined);
  }
  return { cells, errors };
}

async function abuseTarget(ctx: Ctx, target: Target, attacker: Fleet): Promise<AbuseCell> {
  const { opts, fleet, progress } = ctx;
  const instances = target.instances();
  if (instances.length === 0) throw new Error(`${target.name} is not the service (no instances to read)`);
  const transport = target.kind === "ws" ? "ws" : "socket.io";
  const group = `abuse-${target.name}`;
  const frames = rateMeter(() => fleet.live.frames);
  let publisher: Publisher | undefined;
  try {
    progress.phase(`abuse ${target.name}: connecting ${opts.abuseReceivers} receivers`, () => `${fleet.live.open} open, ${fleet.live.failed} failed`);
    const conn = await fleet.connect({
      group,
      kind: target.kind,
      mode: "fanout",
      urls: target.clientUrls,
      count: opts.abuseReceivers,
      ratePerSec: 0,
      concurrency: 200,
      spreadAfter: opts.spreadAfter,
      reconnect: false,
      idPrefix: group,
      timeoutMs: 15_000,
    });
    if (conn.opened === 0)
      throw new Error(
        `no receiver connected (${Object.entries(conn.errors)
          .map(([k, v]) => `${v}× ${k}`)
          .join("; ")})`,
      );
    publisher = await Publisher.connect(target.kind, target.publishUrl, opts.payloadBytes);
    // Every delivery is timed; no completion reports (nothing waits for them).
    await fleet.track(ctx.nextSeq(), false, group);
    await sleep(SETTLE_MS);

    const abuserText = `ab|${"x".repeat(Math.max(0, opts.payloadBytes - 3))}`;
    const plan: { phase: AbusePhaseName; ms: number; text: string | undefined; what: string }[] = [
      { phase: "baseline", ms: opts.abuseBaselineMs, text: undefined, what: "baseline (probe only)" },
      { phase: "flood", ms: opts.abuseFloodMs, text: abuserText, what: "message flood" },
      { phase: "ping", ms: opts.abusePingMs, text: "ping", what: "`ping` flood" },
    ];
    const phases: AbusePhase[] = [];
    let limitMetrics = false;
    for (const step of plan) {
      if (isInterrupted()) throw new Interrupted();
      const pub = publisher;
      progress.phase(
        `abuse ${target.name}: ${step.what}, ${step.ms / 1000}s`,
        () => `${fleet.live.open} open, ${Math.round(frames()).toLocaleString("en-US")} probe frames/s`,
      );
      const before = await fleet.stats(true, group);
      const m0 = await scrapeMetrics(instances.map((i) => i.url));
      limitMetrics ||= counter(m0, "wbs_rate_limited_total") !== undefined;
      const logs0 = logCount(instances);
      const rssWatch = watchRss(instances);
      const cpu = new CpuMeter(() => ({ ...target.processes(), generator: fleet.pids, abuser: attacker.pids, "bench (probe)": [process.pid] }));
      cpu.start();
      let sent = 0;
      const probe = setInterval(() => {
        pub.publish(ctx.nextSeq());
        sent++;
      }, opts.abuseProbeGapMs);
      const t0 = performance.now();
      let abuser: FloodResult | undefined;
      try {
        abuser = step.text
          ? await attacker.flood({
              group: `abuser-${target.name}`,
              kind: target.kind,
              url: target.publishUrl,
              text: step.text,
              durationMs: step.ms,
              timeoutMs: 5_000,
            })
          : await sleep(step.ms).then(() => undefined);
      } finally {
        clearInterval(probe);
      }
      const seconds = (performance.now() - t0) / 1000;
      // The probe's last messages may still be queued behind the flood: wait for them (bounded).
      const expected = sent * before.open;
      const tail0 = performance.now();
      let s = await fleet.stats(false, group);
      while (s.frames < expected && performance.now() - tail0 < tailMaxMs(step.ms) && !isInterrupted()) {
        await sleep(50);
        s = await fleet.stats(false, group);
      }
      const tailMs = Math.round(performance.now() - tail0);
      const rss = rssWatch.stop();
      const cpuUse = cpu.stop();
      const after = await fleet.stats(true, group);
      const m1 = await scrapeMetrics(instances.map((i) => i.url));
      const published = delta(counter(m0, "wbs_broadcasts_total", `origin="${transport}"`), counter(m1, "wbs_broadcasts_total", `origin="${transport}"`));
      const phase: AbusePhase = {
        phase: step.phase,
        seconds: Math.round(seconds * 100) / 100,
        probe: { sent, expected, delivered: after.frames, latency: summarize(after.latency), tailMs },
        receiversOpen: before.open,
        drops: after.drops,
        abuser,
        server: {
          accepted: published === undefined ? undefined : Math.max(0, published - sent),
          refused: delta(counter(m0, "wbs_rate_limited_total"), counter(m1, "wbs_rate_limited_total")),
          disconnects: delta(counter(m0, "wbs_rate_limit_disconnects_total"), counter(m1, "wbs_rate_limit_disconnects_total")),
          statusNotifications: delta(counter(m0, "wbs_broadcasts_total", 'origin="status"'), counter(m1, "wbs_broadcasts_total", 'origin="status"')),
        },
        rss,
        rssGrowthMax: Math.max(...rss.map((r) => r.max - r.before)),
        cpu: cpuUse,
        logRecords: logCount(instances) - logs0,
      };
      phases.push(phase);
      progress.log(
        `  abuse ${target.name} ${step.phase}: probe p50 ${phase.probe.latency.p50} ms p99 ${phase.probe.latency.p99} ms (${phase.probe.delivered}/${expected} delivered)` +
          (abuser
            ? `; abuser sent ${abuser.sent.toLocaleString("en-US")} in ${abuser.connects} connections, accepted ${phase.server.accepted ?? "n/a"}, refused ${phase.server.refused ?? "n/a"}, disconnects counted ${phase.server.disconnects ?? "n/a"}`
            : "") +
          `; RSS +${(phase.rssGrowthMax / 1024 / 1024).toFixed(1)} MiB`,
      );
      await sleep(SETTLE_MS);
    }
    const p99 = (name: AbusePhaseName) => phases.find((p) => p.phase === name)?.probe.latency.p99;
    const ratio = (name: AbusePhaseName) => {
      const base = p99("baseline");
      const under = p99(name);
      return base !== undefined && under !== undefined && base > 0 && Number.isFinite(base) && Number.isFinite(under) ? under / base : undefined;
    };
    const ping = phases.find((p) => p.phase === "ping");
    return {
      target: target.name,
      label: `${target.label}, abuse limits at their defaults`,
      transport,
      receivers: opts.abuseReceivers,
      connected: conn.opened,
      probeGapMs: opts.abuseProbeGapMs,
      phases,
      floodP99Ratio: ratio("flood"),
      pingP99Ratio: ratio("ping"),
      pingRssGrowth: ping && Number.isFinite(ping.rssGrowthMax) ? ping.rssGrowthMax : undefined,
      limitMetrics,
    };
  } finally {
    publisher?.close();
    progress.phase(`abuse ${target.name}: closing`, () => `${fleet.live.open} open`);
    await fleet.closeAll(group);
  }
}

/** Log records the instances wrote so far. */
export const logCount = (instances: ServiceInstance[]) => instances.reduce((n, i) => n + i.logs.length, 0);
