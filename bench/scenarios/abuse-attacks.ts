import WebSocket from "ws";
import { isInterrupted } from "../../harness/processes.js";
import { CpuMeter } from "../../harness/procfs.js";
import { sleep, withTimeout } from "../../harness/timeouts.js";
import { poll } from "../../harness/waiting.js";
import { Fleet } from "../generator/fleet.js";
import type { AddressFloodResult, ReplayResult } from "../generator/protocol.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import { rateMeter } from "../lib/progress.js";
import { counter, counterBy, delta, deltas, scrapeMetrics, wbsCounters } from "../lib/prom.js";
import { type SlowlogMax, startSlowlog } from "../lib/slowlog.js";
import { Publisher } from "../publisher.js";
import type { ClusterHost, Target, TargetName } from "../targets.js";
import { logCount, SETTLE_MS, tailMaxMs, watchRss } from "./abuse.js";
import { type Ctx, Interrupted } from "./context.js";

/**
 * The abuse scenario's two attacks through nginx on the four-instance stack
 * (its limits at their defaults), each against a baseline measured just
 * before it: "replay" (C), a client that asks again and again for the whole
 * history and reads none of it, and "address" (D), many well-paced senders
 * of large messages from one source address.
 */

export type AttackName = "replay" | "address";
export const ATTACK_NAMES: readonly AttackName[] = ["replay", "address"];

/** One address for each attacker: outside the 127.0.0.2–61 the bystanders come from, and not 127.0.0.1 (nginx.conf exempts it). */
export const REPLAY_ADDRESS = "127.0.0.78";
export const FLOOD_ADDRESS = "127.0.0.77";
/** The history's entries: MAX_MESSAGE_BYTES's default, the largest text a broadcast may carry. */
export const FILL_BYTES = 64 * 1024;
/** POSTs of the fill in flight at once. */
const FILL_CONCURRENCY = 4;
/** Bystanders connect at this rate in all: about 10 a second from each of their 60 addresses, under nginx's 20 new sessions a second an address. */
const BYSTANDER_RATE = 600;
/** How the first frame of a /ws broadcast in JSON mode starts. */
const JSON_MESSAGE = Buffer.from('{"type":"message"');

/** What the instances counted during a phase (their GET /metrics before and after, summed over the instances). */
export interface AttackServerCounts {
  /** Δ wbs_slow_clients_cut_total: connections cut for unread data, the attackers' among them. */
  slowCuts: number | undefined;
  /** Δ wbs_rate_limited_total and Δ wbs_rate_limit_disconnects_total; undefined when absent. */
  rateLimited: number | undefined;
  rateLimitDisconnects: number | undefined;
  /** Δ wbs_refusals_total by code, those that moved; undefined when absent. */
  refusals: Record<string, number> | undefined;
  /** Δ wbs_broadcasts_total{origin="ws"}: messages of /ws clients published (the address flood's; the probe is Socket.IO). */
  wsPublished: number | undefined;
  /** Every wbs_ counter that moved, by name and labels (what a server's newer limits count shows here too). */
  moved: Record<string, number>;
}

export interface AttackPhase {
  phase: "baseline" | "attack";
  /** The phase's length, without the tail. */
  seconds: number;
  probe: {
    sent: number;
    /** Ticks while the probe's own connection was gone (the server cut it; it connects again): not sent. */
    unsent: number;
    reconnects: number;
    /** sent × bystanders open at the start. */
    expected: number;
    delivered: number;
    /** expected − delivered, and what of that bystanders still open at the end missed. */
    lost: number;
    lostByOpen: number;
    /** Publish-to-receipt latency of every delivery. */
    latency: LatencySummary;
    /** How long after the phase the last deliveries were waited for (bounded: later ones are lost, not timed). */
    tailMs: number;
  };
  bystandersOpen: number;
  /** Bystanders the server closed during the phase and its tail. */
  bystandersCut: number;
  server: AttackServerCounts;
  /** VmRSS of each instance, bytes: just before the phase, and the most seen during it (tail included). */
  rss: { instance: string; before: number; max: number }[];
  rssGrowthMax: number;
  rssGrowthInstance: string | undefined;
  /** Percent of one core by process over the phase (tail excluded): each instance, redis, nginx, generator, attacker, bench. */
  cpu: Record<string, number>;
  /** The longest command in Redis's SLOWLOG over the phase and its tail (every command logged). */
  slowlog: SlowlogMax | undefined;
  slowlogError?: string;
  replay?: ReplayResult;
  address?: AddressFloodResult;
  logRecords: number;
}

export interface AttackResult {
  attack: AttackName;
  bystanders: number;
  connected: number;
  baseline: AttackPhase;
  under: AttackPhase;
  /** The bystanders' p99 under the attack ÷ their p99 in the baseline. */
  p99Ratio: number | undefined;
}

/** The history filled before the attacks: POST /broadcast-to-all through nginx, watched by a /ws client in JSON mode. */
export interface AttackFill {
  entries: number;
  bytes: number;
  seconds: number;
  /** The welcome's epoch, and the offset of the first entry filled (the oldest). */
  epoch: string;
  oldest: string;
  /** Entries the watcher saw arrive. */
  seen: number;
  /** Whether the admin calls carried the stack's token. */
  token: boolean;
}

export interface AttackCell {
  target: TargetName;
  label: string;
  probeGapMs: number;
  fill: AttackFill | undefined;
  results: AttackResult[];
}

/** The stack's admin token, when it has one (older stacks have none and answer admin calls on loopback). */
const adminToken = (host: ClusterHost): string | undefined => (host.stack as { adminToken?: string }).adminToken;

/** A stack to attack: started when its turn comes (undefined when it did not start: the caller has said why), stopped after. */
export interface AttackStack {
  target: TargetName;
  start(): Promise<ClusterHost | undefined>;
  stop(): Promise<void>;
}

/** Runs the fill and both attacks on each stack in turn, with one attacker process for all. */
export async function runAttacks(ctx: Ctx, stacks: AttackStack[]): Promise<{ cells: AttackCell[]; errors: { target: TargetName; message: string }[] }> {
  const cells: AttackCell[] = [];
  const errors: { target: TargetName; message: string }[] = [];
  if (stacks.length === 0) return { cells, errors };
  ctx.progress.phase("abuse attacks: starting the attackers' process");
  // A process of its own: its sockets must not delay any bystander's timestamps.
  const attacker = await Fleet.start(1);
  try {
    for (const stack of stacks) {
      if (isInterrupted()) throw new Interrupted();
      ctx.progress.phase(`abuse attacks: starting ${stack.target}`);
      const host = await stack.start();
      if (!host) continue;
      try {
        cells.push(await attackStack(ctx, host, attacker, errors));
      } finally {
        await stack.stop();
      }
    }
  } finally {
    await attacker.stop().catch(() => undefined);
  }
  return { cells, errors };
}

/** The fill, then each attack; a failure is recorded and the next one runs (the replay needs the fill). */
async function attackStack(ctx: Ctx, host: ClusterHost, attacker: Fleet, errors: { target: TargetName; message: string }[]): Promise<AttackCell> {
  const target = host.targets[0]!;
  const cell: AttackCell = {
    target: target.name,
    label: `${target.label}, abuse limits at their defaults`,
    probeGapMs: ctx.opts.abuseProbeGapMs,
    fill: undefined,
    results: [],
  };
  const failed = (what: string, err: unknown) => {
    if (isInterrupted() || err instanceof Interrupted) throw new Interrupted();
    const message = `${what}: ${(err as Error).message?.split("\n")[0] ?? String(err)}`;
    errors.push({ target: target.name, message });
    ctx.progress.log(`bench: abuse on ${target.name} failed: ${message}`);
  };
  try {
    cell.fill = await fillHistory(ctx, host);
  } catch (err) {
    failed("history fill", err);
  }
  for (const attack of ATTACK_NAMES) {
    if (isInterrupted()) throw new Interrupted();
    if (attack === "replay" && !cell.fill) continue;
    try {
      cell.results.push(await attackTarget(ctx, host, attacker, attack, cell.fill));
    } catch (err) {
      failed(attack, err);
    }
  }
  return cell;
}

/** POST /broadcast-to-all through nginx, with the token when there is one; throws on any answer but 2xx. */
async function broadcastToAll(base: string, token: string | undefined, message: string): Promise<void> {
  const res = await fetch(`${base}/broadcast-to-all`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify({ message }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await res.text();
  if (!res.ok) throw new Error(`POST /broadcast-to-all answered ${res.status}: ${body.slice(0, 200)}`);
}

/** A /ws client in JSON mode: the welcome's epoch, then the offset of the first broadcast it sees and how many it saw. */
async function watchHistory(base: string): Promise<{ epoch: string; oldest(): string | undefined; seen(): number; close(): void }> {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/ws?format=json`, { perMessageDeflate: false });
  let epoch: string | undefined;
  let oldest: string | undefined;
  let seen = 0;
  ws.on("error", () => undefined);
  ws.on("message", (data: Buffer) => {
    if (epoch === undefined) {
      const frame = JSON.parse(data.toString()) as { type?: string; data?: { epoch?: string } };
      if (frame.type === "welcome") epoch = frame.data?.epoch ?? "";
      return;
    }
    if (!data.subarray(0, JSON_MESSAGE.length).equals(JSON_MESSAGE)) return;
    seen++;
    oldest ??= (JSON.parse(data.toString()) as { data?: { offset?: string } }).data?.offset;
  });
  try {
    await poll(() => epoch !== undefined, { timeoutMs: 10_000, everyMs: 20, what: "the history watcher's welcome" });
  } catch (err) {
    ws.terminate();
    throw err;
  }
  if (!epoch) {
    ws.terminate();
    throw new Error("the welcome carries no epoch: history is off");
  }
  return { epoch, oldest: () => oldest, seen: () => seen, close: () => ws.terminate() };
}

/** Fills the history with `abuseFill` entries of 64 KiB (no bystander is connected yet: none gets them). */
async function fillHistory(ctx: Ctx, host: ClusterHost): Promise<AttackFill> {
  const { opts, progress } = ctx;
  const name = host.targets[0]!.name;
  const token = adminToken(host);
  const base = host.stack.url;
  const count = opts.abuseFill;
  let posted = 0;
  progress.phase(`abuse ${name}: filling the history, ${count} entries of 64 KiB`, () => `${posted} posted`);
  const t0 = performance.now();
  const watcher = await watchHistory(base);
  try {
    let next = 0;
    const poster = async () => {
      while (next < count) {
        const k = next++;
        await broadcastToAll(base, token, `fill|${k}|`.padEnd(FILL_BYTES, "f"));
        posted++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(FILL_CONCURRENCY, count) }, poster));
    await poll(() => watcher.seen() >= count, { timeoutMs: 30_000, everyMs: 20, what: `the watcher to see the ${count} entries filled` }).catch(
      () => undefined,
    );
    const oldest = watcher.oldest();
    if (!oldest) throw new Error(`the history watcher saw no offset (${watcher.seen()} of ${count} entries arrived)`);
    const fill: AttackFill = {
      entries: count,
      bytes: FILL_BYTES,
      seconds: Math.round((performance.now() - t0) / 10) / 100,
      epoch: watcher.epoch,
      oldest,
      seen: watcher.seen(),
      token: token !== undefined,
    };
    progress.log(`  abuse ${name}: history filled with ${count} entries of 64 KiB in ${fill.seconds} s (oldest ${oldest}, epoch ${fill.epoch})`);
    return fill;
  } finally {
    watcher.close();
  }
}

/**
 * The well-behaved publisher of the bystanders' messages, one a tick. An
 * attack may get it cut too (it receives every broadcast): it then connects
 * again, and the ticks meanwhile are counted as not sent.
 */
class Probe {
  sent = 0;
  unsent = 0;
  reconnects = 0;
  #pub: Publisher;
  #connecting = false;
  #closed = false;

  private constructor(
    private readonly target: Target,
    private readonly payloadBytes: number,
    pub: Publisher,
  ) {
    this.#pub = pub;
  }

  static async connect(target: Target, payloadBytes: number): Promise<Probe> {
    return new Probe(target, payloadBytes, await Publisher.connect(target.kind, target.publishUrl, payloadBytes));
  }

  reset(): void {
    this.sent = 0;
    this.unsent = 0;
    this.reconnects = 0;
  }

  tick(seq: number): void {
    if (this.#pub.open) {
      this.#pub.publish(seq);
      this.sent++;
      return;
    }
    this.unsent++;
    if (this.#connecting || this.#closed) return;
    this.#connecting = true;
    Publisher.connect(this.target.kind, this.target.publishUrl, this.payloadBytes)
      .then(
        (pub) => {
          if (this.#closed) return pub.close();
          this.#pub.close();
          this.#pub = pub;
          this.reconnects++;
        },
        () => undefined,
      )
      .finally(() => (this.#connecting = false));
  }

  close(): void {
    this.#closed = true;
    this.#pub.close();
  }
}

interface PhaseEnv {
  ctx: Ctx;
  host: ClusterHost;
  target: Target;
  group: string;
  probe: Probe;
  attacker: Fleet;
}

/** Bystanders, the probe, a baseline and then the attack; the bystanders are closed after it. */
async function attackTarget(ctx: Ctx, host: ClusterHost, attacker: Fleet, attack: AttackName, fill: AttackFill | undefined): Promise<AttackResult> {
  const { opts, fleet, progress } = ctx;
  const target = host.targets[0]!;
  const group = `attack-${attack}-${target.name}`;
  let probe: Probe | undefined;
  try {
    progress.phase(
      `abuse ${target.name} ${attack}: connecting ${opts.abuseBystanders} bystanders`,
      () => `${fleet.live.open} open, ${fleet.live.failed} failed`,
    );
    // From 127.0.0.2–61 (spread from the first): many users, none of them the attacker's address.
    const conn = await fleet.connect({
      group,
      kind: target.kind,
      mode: "fanout",
      urls: target.clientUrls,
      count: opts.abuseBystanders,
      ratePerSec: BYSTANDER_RATE,
      concurrency: 200,
      spreadAfter: 0,
      reconnect: false,
      idPrefix: group,
      timeoutMs: 15_000,
    });
    if (conn.opened === 0)
      throw new Error(
        `no bystander connected (${Object.entries(conn.errors)
          .map(([k, v]) => `${v}× ${k}`)
          .join("; ")})`,
      );
    probe = await Probe.connect(target, opts.payloadBytes);
    await sleep(SETTLE_MS);
    const env: PhaseEnv = { ctx, host, target, group, probe, attacker };
    const baseline = await measure(env, "baseline", opts.abuseBaselineMs, "baseline (probe only)", () => sleep(opts.abuseBaselineMs).then(() => ({})));
    await sleep(SETTLE_MS);
    const under =
      attack === "replay"
        ? await measure(env, "attack", opts.abuseReplayMs, `replay attack from ${REPLAY_ADDRESS}`, async () => ({
            replay: await attacker.replay({
              url: target.publishUrl,
              since: fill!.oldest,
              epoch: fill!.epoch,
              localAddress: REPLAY_ADDRESS,
              requests: opts.abuseReplayRequests,
              durationMs: opts.abuseReplayMs,
              timeoutMs: 5_000,
            }),
          }))
        : await measure(env, "attack", opts.abuseAddressMs, `address flood from ${FLOOD_ADDRESS}`, async () => ({
            address: await attacker.addressFlood({
              url: target.publishUrl,
              localAddress: FLOOD_ADDRESS,
              connections: opts.abuseAddressConns,
              ratePerSec: opts.abuseAddressRate,
              text: `ad|${"a".repeat(Math.max(0, opts.abuseAddressBytes - 3))}`,
              durationMs: opts.abuseAddressMs,
              timeoutMs: 5_000,
            }),
          }));
    const base = baseline.probe.latency.p99;
    const p99 = under.probe.latency.p99;
    return {
      attack,
      bystanders: opts.abuseBystanders,
      connected: conn.opened,
      baseline,
      under,
      p99Ratio: base > 0 && Number.isFinite(base) && Number.isFinite(p99) ? p99 / base : undefined,
    };
  } finally {
    probe?.close();
    progress.phase(`abuse ${target.name} ${attack}: closing`, () => `${fleet.live.open} open`);
    await fleet.closeAll(group);
  }
}

/** Waits (at most `maxMs`) until every bystander still open has every probe message; answers how long it waited. */
async function waitForProbe(ctx: Ctx, group: string, sent: number, maxMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs && !isInterrupted()) {
    const d = await ctx.fleet.delivery(group);
    if (Object.keys(d.receivedBy).every((k) => Number(k) >= sent)) break;
    await sleep(100);
  }
  return Math.round(performance.now() - t0);
}

/** One phase: the probe publishing while `run` runs, and everything read around it. */
async function measure(
  env: PhaseEnv,
  phase: AttackPhase["phase"],
  ms: number,
  what: string,
  run: () => Promise<Pick<AttackPhase, "replay" | "address">>,
): Promise<AttackPhase> {
  const { ctx, host, target, group, probe, attacker } = env;
  const { fleet, progress, opts } = ctx;
  if (isInterrupted()) throw new Interrupted();
  const instances = target.instances();
  const urls = instances.map((i) => i.url);
  const frames = rateMeter(() => fleet.live.frames);
  progress.phase(
    `abuse ${target.name}: ${what}, ${ms / 1000}s`,
    () => `${fleet.live.open} open, ${Math.round(frames()).toLocaleString("en-US")} probe frames/s`,
  );
  await fleet.track(ctx.nextSeq(), false, group);
  const before = await fleet.stats(true, group);
  const m0 = await scrapeMetrics(urls);
  const logs0 = logCount(instances);
  let slowlogError: string | undefined;
  const slowlog = await withTimeout(startSlowlog(host.stack.redisUrl), 15_000, "SLOWLOG set-up").catch((err: Error) => {
    slowlogError = err.message;
    return undefined;
  });
  const rssWatch = watchRss(instances);
  const cpu = new CpuMeter(() => ({ ...target.processes(), generator: fleet.pids, attacker: attacker.pids, "bench (probe)": [process.pid] }));
  cpu.start();
  probe.reset();
  const timer = setInterval(() => probe.tick(ctx.nextSeq()), opts.abuseProbeGapMs);
  const t0 = performance.now();
  let done: Pick<AttackPhase, "replay" | "address">;
  try {
    done = await run();
  } finally {
    clearInterval(timer);
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpuUse = cpu.stop();
  const { sent, unsent, reconnects } = probe;
  const tailMs = await waitForProbe(ctx, group, sent, tailMaxMs(ms));
  const rss = rssWatch.stop();
  const slow = await slowlog?.stop().catch((err: Error) => {
    slowlogError = err.message;
    return undefined;
  });
  const after = await fleet.stats(true, group);
  const delivery = await fleet.delivery(group);
  const m1 = await scrapeMetrics(urls);
  const expected = sent * before.open;
  const lostByOpen = Object.entries(delivery.receivedBy).reduce((n, [got, clients]) => n + clients * Math.max(0, sent - Number(got)), 0);
  const refusals0 = counterBy(m0, "wbs_refusals_total", "code");
  const refusals1 = counterBy(m1, "wbs_refusals_total", "code");
  const grew = rss.reduce<(typeof rss)[number] | undefined>((a, b) => (a === undefined || b.max - b.before > a.max - a.before ? b : a), undefined);
  const result: AttackPhase = {
    phase,
    seconds: Math.round(seconds * 100) / 100,
    probe: {
      sent,
      unsent,
      reconnects,
      expected,
      delivered: after.frames,
      lost: Math.max(0, expected - after.frames),
      lostByOpen,
      latency: summarize(after.latency),
      tailMs,
    },
    bystandersOpen: before.open,
    bystandersCut: after.drops,
    server: {
      slowCuts: delta(counter(m0, "wbs_slow_clients_cut_total"), counter(m1, "wbs_slow_clients_cut_total")),
      rateLimited: delta(counter(m0, "wbs_rate_limited_total"), counter(m1, "wbs_rate_limited_total")),
      rateLimitDisconnects: delta(counter(m0, "wbs_rate_limit_disconnects_total"), counter(m1, "wbs_rate_limit_disconnects_total")),
      refusals: refusals0 && refusals1 ? deltas(refusals0, refusals1) : undefined,
      wsPublished: delta(counter(m0, "wbs_broadcasts_total", 'origin="ws"'), counter(m1, "wbs_broadcasts_total", 'origin="ws"')),
      moved: deltas(wbsCounters(m0), wbsCounters(m1)),
    },
    rss,
    rssGrowthMax: grew ? grew.max - grew.before : NaN,
    rssGrowthInstance: grew?.instance,
    cpu: cpuUse,
    slowlog: slow,
    ...(slowlogError ? { slowlogError } : {}),
    ...done,
    logRecords: logCount(instances) - logs0,
  };
  progress.log(
    `  abuse ${target.name} ${what}: probe p99 ${result.probe.latency.p99} ms (${result.probe.delivered}/${expected} delivered), ` +
      `${result.bystandersCut} bystanders cut, Redis ${cpuUse.redis ?? "–"}% CPU, slowlog max ${slow ? `${slow.ms} ms ${slow.command}` : "–"}, ` +
      `RSS +${(result.rssGrowthMax / 1024 / 1024).toFixed(1)} MiB`,
  );
  return result;
}
