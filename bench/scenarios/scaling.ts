import { isInterrupted } from "../../harness/processes.js";
import { cpuSeconds, machineLoad } from "../../harness/procfs.js";
import { sleep } from "../../harness/timeouts.js";
import { type Footprints, readFootprints, rssGrowthPerConnection } from "../lib/footprint.js";
import { KIB, round } from "../lib/format.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import { collectGarbageIn } from "../lib/inspector.js";
import { discardingSubscriber, redisCommand } from "../lib/redis-raw.js";
import { Publisher } from "../publisher.js";
import type { ClusterHost, TargetName } from "../targets.js";
import { type Ctx, Interrupted } from "./context.js";
import { Completions, completionTimeoutMs } from "./fanout.js";

/** The roles whose CPU a deployment buys: the rest (generator, bench) is this machine's load. */
const SERVING = ["instances", "nginx workers", "redis"] as const;

/** A phase of broadcasts: what was delivered and what it cost each serving role. */
export interface ScalingPhase {
  seconds: number;
  window: number;
  broadcasts: number;
  /** Broadcasts some client had not got within the time limit. */
  incomplete: number;
  frames: number;
  framesPerSec: number;
  /** CPU-seconds by role over the phase. */
  cpu: Record<string, number>;
  /**
   * CPU µs per delivered frame, by serving role, less what the held clients
   * cost anyway over as long (the idle phase's rate: heartbeats, lease refreshes).
   */
  usPerFrame: Record<string, number>;
  /** Redis CPU µs per broadcast, less its idle rate (every broadcast crosses Redis once per instance). */
  redisUsPerBroadcast: number;
  latency: LatencySummary;
}

/** Redis CPU per publish with this many subscribers to the broadcast channel. */
export interface RedisRow {
  subscribers: number;
  publishes: number;
  seconds: number;
  /** redis-server's CPU over the phase, less its idle rate over as long. */
  cpuSeconds: number;
  usPerPublish: number;
}

export interface ScalingResult {
  target: TargetName;
  instances: number;
  clients: number;
  connected: number;
  /** Connecting the clients through nginx: CPU µs per new connection by serving role. */
  connect: { seconds: number; ratePerSec: number; cpu: Record<string, number>; usPerConnect: Record<string, number> };
  /** RSS growth per connection by role (forced GC in the instances first when they run with an inspector). */
  memory: { rssPerConnection: Record<string, number>; gc: boolean; before: Footprints; after: Footprints };
  /** Clients held, nothing published: heartbeats (Engine.IO ping every 25 s). CPU µs per connection-second. */
  idle: { seconds: number; cpu: Record<string, number>; usPerConnectionSecond: Record<string, number> };
  paced: ScalingPhase;
  burst: ScalingPhase & { framesPerSecPerInstance: number; framesPerInstanceCpuSecond: number };
  redis: {
    channel: string | undefined;
    /** redis-server's CPU a second with nothing published (subtracted from each row). */
    idleUsPerSec: number;
    rows: RedisRow[];
    /** Least-squares line through the rows: µs per publish = base + perSubscriber × subscribers. */
    baseUsPerPublish: number;
    usPerSubscriber: number;
    note: string | undefined;
  };
  load: { before: number; after: number };
}

const cpuByRole = (roles: Record<string, number[]>): Record<string, number> =>
  Object.fromEntries(Object.entries(roles).map(([role, pids]) => [role, pids.reduce((s, pid) => s + (cpuSeconds(pid) ?? 0), 0)]));

const minus = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(a).map(([k, v]) => [k, Math.round((v - (b[k] ?? 0)) * 1000) / 1000]));

/** µs of each serving role's CPU per unit. */
const perUnit = (cpu: Record<string, number>, units: number): Record<string, number> =>
  Object.fromEntries(SERVING.map((role) => [role, units > 0 ? Math.round(((cpu[role] ?? 0) * 1e6 * 100) / units) / 100 : NaN]));

/** Least squares y = a + b·x. */
function fitLine(points: { x: number; y: number }[]): { a: number; b: number } {
  const n = points.length;
  if (n === 0) return { a: NaN, b: NaN };
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  if (sxx === 0) return { a: my, b: NaN };
  const b = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx;
  return { a: my - b * mx, b };
}

/**
 * Figures for docs/SCALING.md, on the four instances behind nginx: Redis CPU
 * per published broadcast (redis-server's /proc CPU over a known number of
 * publishes, with more subscribers to the broadcast channel added to see the
 * cost of each further instance), then `scalingClients` clients through
 * nginx: CPU per new connection, memory per connection, CPU per idle
 * connection-second, and CPU per delivered frame paced (one broadcast in
 * flight) and in a burst (`window` in flight), by role (instances, nginx
 * workers, Redis).
 */
export async function runScaling(ctx: Ctx, host: ClusterHost): Promise<ScalingResult> {
  const { opts, fleet, progress } = ctx;
  const target = host.targets[0]!;
  const instances = host.stack.instances.length;
  const roles = (): Record<string, number[]> => ({
    ...host.roles(),
    generator: fleet.pids,
    bench: [process.pid],
  });
  const group = `scaling-${target.name}`;
  const completions = new Completions(fleet);
  const load0 = machineLoad().load1;
  const publisher = await Publisher.connect(target.kind, target.publishUrl, opts.payloadBytes);
  const live = () => `${fleet.live.open} open, ${fleet.live.frames.toLocaleString("en-US")} frames`;

  /** Broadcasts, `window` in flight, until `count` are out or `durationMs` has passed; CPU by role over it. */
  /** `idle`: CPU-seconds a second by role with the clients held and nothing published, subtracted from the per-unit figures. */
  const broadcast = async (o: {
    window: number;
    count?: number;
    durationMs?: number;
    clients: number;
    idle?: Record<string, number>;
  }): Promise<ScalingPhase> => {
    const st0 = await fleet.stats(true, group);
    const active = st0.perChild.flatMap((n, i) => (n > 0 ? [i] : []));
    await fleet.track(ctx.nextSeq(), true, group);
    let out = 0;
    let inflight = 0;
    let incomplete = 0;
    const c0 = cpuByRole(roles());
    const t0 = performance.now();
    const more = () => !isInterrupted() && (o.count !== undefined ? out < o.count : performance.now() - t0 < (o.durationMs ?? 0));
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        while (inflight < o.window && more()) {
          const seq = ctx.nextSeq();
          const published = publisher.publish(seq);
          out++;
          inflight++;
          void completions.expect(seq, published, active, completionTimeoutMs(o.clients)).then((c) => {
            inflight--;
            if (c === undefined) incomplete++;
            if (inflight === 0 && !more()) resolve();
            else pump();
          });
        }
      };
      pump();
    });
    const seconds = (performance.now() - t0) / 1000;
    const cpu = minus(cpuByRole(roles()), c0);
    const net = Object.fromEntries(Object.entries(cpu).map(([role, v]) => [role, v - (o.idle?.[role] ?? 0) * seconds]));
    const s = await fleet.stats(true, group);
    return {
      seconds: Math.round(seconds * 100) / 100,
      window: o.window,
      broadcasts: out,
      incomplete,
      frames: s.frames,
      framesPerSec: Math.round(s.frames / seconds),
      cpu,
      usPerFrame: perUnit(net, s.frames),
      redisUsPerBroadcast: out > 0 ? Math.round(((net.redis ?? 0) * 1e6 * 100) / out) / 100 : NaN,
      latency: summarize(s.latency),
    };
  };

  const connect = (count: number, rate: number) =>
    fleet.connect({
      group,
      kind: target.kind,
      mode: "fanout",
      urls: target.clientUrls,
      count,
      ratePerSec: rate,
      concurrency: 500,
      spreadAfter: opts.spreadAfter,
      reconnect: false,
      idPrefix: group,
      timeoutMs: 15_000,
    });

  const gcAll = async (): Promise<boolean> => {
    const done = await collectGarbageIn(target.inspectors());
    if (done) await sleep(200);
    return done;
  };

  try {
    // 1. Redis per publish: one receiver an instance (each broadcast is delivered somewhere,
    //    at almost no fan-out cost), then more subscribers to the broadcast channel.
    progress.phase(`scaling ${target.name}: Redis CPU per publish`, live);
    await connect(instances, 0);
    const redisUrl = host.stack.redisUrl;
    const channel = await broadcastChannel(redisUrl, instances);
    const redisPids = host.roles().redis ?? [];
    const redisCpu = () => redisPids.reduce((s, pid) => s + (cpuSeconds(pid) ?? 0), 0);
    const idleMs = Math.max(500, Math.min(3_000, opts.scalingIdleMs));
    const r0 = redisCpu();
    await sleep(idleMs);
    const idleUsPerSec = ((redisCpu() - r0) * 1e6) / (idleMs / 1000);
    const rows: RedisRow[] = [];
    let note: string | undefined = channel ? undefined : `no channel with ${instances} subscribers: rows with more subscribers left out`;
    for (const extra of channel ? opts.scalingSubscribers : [0]) {
      if (isInterrupted()) throw new Interrupted();
      const subs = await Promise.all(Array.from({ length: extra }, () => discardingSubscriber(redisUrl, channel!.name, channel!.command)));
      try {
        progress.phase(`scaling ${target.name}: ${opts.scalingPublishes} publishes, ${instances + extra} subscribers`, live);
        const c0 = redisCpu();
        const phase = await broadcast({ window: 16, count: opts.scalingPublishes, clients: instances });
        const cpu = redisCpu() - c0 - (idleUsPerSec / 1e6) * phase.seconds;
        rows.push({
          subscribers: instances + extra,
          publishes: phase.broadcasts,
          seconds: phase.seconds,
          cpuSeconds: Math.round(cpu * 1000) / 1000,
          usPerPublish: Math.round(((cpu * 1e6) / Math.max(1, phase.broadcasts)) * 100) / 100,
        });
        if (phase.incomplete > 0) note = `${phase.incomplete} publishes not delivered within the time limit`;
      } finally {
        for (const s of subs) s.close();
      }
    }
    const fit = fitLine(rows.map((r) => ({ x: r.subscribers, y: r.usPerPublish })));
    await fleet.closeAll(group);
    await sleep(300);

    // 2. Clients through nginx: connect, memory, idle.
    const gc = await gcAll();
    const before = readFootprints(roles());
    progress.phase(`scaling ${target.name}: connecting ${opts.scalingClients} clients through nginx`, live);
    const rate = opts.scalingConnectRate;
    const k0 = cpuByRole(roles());
    const t0 = performance.now();
    const conn = await connect(opts.scalingClients, rate);
    const connectSeconds = (performance.now() - t0) / 1000;
    const connectCpu = minus(cpuByRole(roles()), k0);
    await sleep(500);
    if (gc) await gcAll();
    const after = readFootprints(roles());
    const held = (await fleet.stats(false, group)).open;

    progress.phase(`scaling ${target.name}: ${held} idle clients, ${opts.scalingIdleMs} ms`, live);
    const i0 = cpuByRole(roles());
    const ti = performance.now();
    await sleep(opts.scalingIdleMs);
    const idleSeconds = (performance.now() - ti) / 1000;
    const idleCpu = minus(cpuByRole(roles()), i0);

    // 3. Broadcasts: paced (one in flight), then a burst.
    progress.phase(`scaling ${target.name}: ${opts.scalingPaced} paced broadcasts to ${held}`, live);
    const idleRate = Object.fromEntries(Object.entries(idleCpu).map(([role, v]) => [role, v / idleSeconds]));
    const paced = await broadcast({ window: 1, count: opts.scalingPaced, clients: held, idle: idleRate });
    progress.phase(`scaling ${target.name}: burst, ${opts.scalingWindow} in flight for ${opts.scalingBurstMs} ms`, live);
    const burst = await broadcast({ window: opts.scalingWindow, durationMs: opts.scalingBurstMs, clients: held, idle: idleRate });
    const instanceCpu = burst.cpu.instances ?? 0;

    const result: ScalingResult = {
      target: target.name,
      instances,
      clients: opts.scalingClients,
      connected: conn.opened,
      connect: {
        seconds: Math.round(connectSeconds * 100) / 100,
        ratePerSec: Math.round(conn.opened / connectSeconds),
        cpu: connectCpu,
        usPerConnect: perUnit(connectCpu, conn.opened),
      },
      memory: { rssPerConnection: rssGrowthPerConnection(before, after, held), gc, before, after },
      idle: { seconds: Math.round(idleSeconds * 100) / 100, cpu: idleCpu, usPerConnectionSecond: perUnit(idleCpu, held * idleSeconds) },
      paced,
      burst: {
        ...burst,
        framesPerSecPerInstance: Math.round(burst.framesPerSec / instances),
        framesPerInstanceCpuSecond: instanceCpu > 0 ? Math.round(burst.frames / instanceCpu) : NaN,
      },
      redis: { channel: channel?.name, idleUsPerSec: Math.round(idleUsPerSec), rows, baseUsPerPublish: round(fit.a), usPerSubscriber: round(fit.b), note },
      load: { before: load0, after: machineLoad().load1 },
    };
    progress.log(
      `  scaling ${target.name}: Redis ${result.redis.baseUsPerPublish} µs a publish + ${result.redis.usPerSubscriber} µs a subscriber; ` +
        `${held} clients: ${fmtKiB(result.memory.rssPerConnection.instances)} instances + ${fmtKiB(result.memory.rssPerConnection["nginx workers"])} nginx per connection; ` +
        `burst ${result.burst.framesPerSec.toLocaleString("en-US")} frames/s, ${result.burst.framesPerInstanceCpuSecond.toLocaleString("en-US")} frames per instance CPU-s, ` +
        `nginx ${result.burst.usPerFrame["nginx workers"]} µs a frame`,
    );
    return result;
  } finally {
    completions.clear();
    publisher.close();
    progress.phase(`scaling ${target.name}: closing`, live);
    await fleet.closeAll(group);
  }
}

const fmtKiB = (b: number | undefined) => `${b === undefined ? "–" : (b / KIB).toFixed(1)} KiB`;

/**
 * The channel every instance subscribes to for broadcasts: the one with a
 * subscriber an instance whose name says history (the service's delivery
 * channel), or any with that many. Sharded channels (SSUBSCRIBE) count too.
 */
async function broadcastChannel(url: string, instances: number): Promise<{ name: string; command: string } | undefined> {
  const found: { name: string; command: string }[] = [];
  for (const [list, numsub, command] of [
    ["CHANNELS", "NUMSUB", "SUBSCRIBE"],
    ["SHARDCHANNELS", "SHARDNUMSUB", "SSUBSCRIBE"],
  ] as const) {
    const names = (await redisCommand(url, ["PUBSUB", list]).catch(() => [])) as string[];
    if (!Array.isArray(names) || names.length === 0) continue;
    const counts = (await redisCommand(url, ["PUBSUB", numsub, ...names])) as (string | number)[];
    for (let i = 0; i + 1 < counts.length; i += 2) if (Number(counts[i + 1]) === instances) found.push({ name: String(counts[i]), command });
  }
  return found.find((c) => /history/.test(c.name)) ?? found[0];
}
