import { existsSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { BEFORE_TARGETS, OPT_IN_TARGETS, TARGET_NAMES, type TargetName } from "./targets.js";

export const SCENARIOS = ["memory", "fanout", "echo", "scaling", "ramp", "drain", "abuse"] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface Options {
  preset: "quick" | "full";
  targets: TargetName[];
  scenarios: Scenario[];
  /** Fan-out client counts, ascending. */
  sizes: number[];
  payloadBytes: number;
  /** Paced broadcasts (one in flight) per target and size, and the time cap for a size (all targets). */
  pacedCount: number;
  pacedMaxMs: number;
  pacedGapMs: number;
  /**
   * Saturated trials per target, size and window (the median is reported), each this long, with
   * `window` broadcasts in flight: 1 (one at a time, back to back: what a lone broadcast costs)
   * and a burst (50: many in flight, what batching gains). Paced latency is measured in as many rounds.
   */
  trials: number;
  throughputMs: number;
  windows: number[];
  echoClients: number;
  echoRate: number;
  echoMs: number;
  rampStartRate: number;
  rampFactor: number;
  rampStepMs: number;
  rampMax: number;
  /** At the top of the ramp: broadcasts to every client held, this long, at this rate. */
  rampHoldMs: number;
  rampHoldRate: number;
  memoryClients: number;
  memorySettleMs: number;
  /** Memory measured this many times per target: the first on the run's processes, the others on fresh ones. */
  memoryRounds: number;
  /** Heap snapshots before and after this many idle clients, diffed by constructor (0: off). */
  heapDiff: number;
  /** Scaling scenario (docs/SCALING.md): clients through nginx, their connect rate, the idle window, paced broadcasts, the burst. */
  scalingClients: number;
  scalingConnectRate: number;
  scalingIdleMs: number;
  scalingPaced: number;
  scalingBurstMs: number;
  /** Broadcasts in flight in the scaling scenario's burst (4: the window docs/SCALING.md was measured with). */
  scalingWindow: number;
  /** Publishes per row of the Redis figure, and the subscribers added to the broadcast channel for each row. */
  scalingPublishes: number;
  scalingSubscribers: number[];
  drainClients: number;
  drainRate: number;
  drainForcedSec: number;
  /** Abuse scenario: receivers per target, and the length of each phase (baseline, message flood, `ping` flood). */
  abuseReceivers: number;
  abuseBaselineMs: number;
  abuseFloodMs: number;
  abusePingMs: number;
  /** The well-behaved probe publishes one message every this many ms (under the 20/s default rate limit). */
  abuseProbeGapMs: number;
  /**
   * The two attacks through nginx on the four-instance stack (scenarios/abuse-attacks.ts):
   * bystanders receiving the probe's messages, and the history entries of 64 KiB filled first.
   */
  abuseBystanders: number;
  abuseFill: number;
  /** The replay attack: this long, with this many replay requests evenly over it. */
  abuseReplayMs: number;
  abuseReplayRequests: number;
  /** The address flood: this long, this many connections from one address, each sending this many messages of this size a second. */
  abuseAddressMs: number;
  abuseAddressConns: number;
  abuseAddressRate: number;
  abuseAddressBytes: number;
  /** CPU profile (over the inspector) of one extra saturated phase at the largest size and window. */
  profile: boolean;
  /**
   * A checkout of an earlier commit (a git worktree with node_modules linked in): its server runs
   * beside this one as `ws-1-before` and `sio-1-before` in the fan-out, for the before/after ratios
   * and CPU profiles.
   */
  before: string | undefined;
  /** Generator children; 0 = as many as the connections need (at least 2). */
  children: number;
  /** Connections to one destination from 127.0.0.1 before moving to 127.0.0.2, … */
  spreadAfter: number;
  out: string;
}

const PRESETS: Record<"quick" | "full", Omit<Options, "preset" | "targets" | "scenarios" | "out" | "children" | "spreadAfter" | "before">> = {
  quick: {
    sizes: [250, 1000],
    payloadBytes: 100,
    pacedCount: 10,
    pacedMaxMs: 1_000,
    pacedGapMs: 10,
    trials: 3,
    throughputMs: 300,
    windows: [1, 50],
    echoClients: 200,
    echoRate: 500,
    echoMs: 800,
    rampStartRate: 500,
    rampFactor: 2,
    rampStepMs: 1_000,
    rampMax: 2_000,
    rampHoldMs: 2_000,
    rampHoldRate: 2,
    memoryClients: 1_000,
    memorySettleMs: 500,
    memoryRounds: 1,
    heapDiff: 0,
    scalingClients: 500,
    scalingConnectRate: 500,
    scalingIdleMs: 1_000,
    scalingPaced: 10,
    scalingBurstMs: 500,
    scalingWindow: 4,
    scalingPublishes: 1_000,
    scalingSubscribers: [0, 12],
    drainClients: 400,
    drainRate: 10,
    drainForcedSec: 2,
    abuseReceivers: 50,
    abuseBaselineMs: 1_200,
    abuseFloodMs: 2_000,
    abusePingMs: 3_000,
    abuseProbeGapMs: 60,
    abuseBystanders: 200,
    abuseFill: 100,
    abuseReplayMs: 5_000,
    abuseReplayRequests: 3,
    abuseAddressMs: 4_000,
    abuseAddressConns: 50,
    abuseAddressRate: 15,
    abuseAddressBytes: 32 * 1024,
    profile: false,
  },
  full: {
    sizes: [1_000, 5_000, 10_000],
    payloadBytes: 100,
    pacedCount: 40,
    // At 10k clients a paced broadcast takes a few hundred ms a target: enough of them for a p99 that holds.
    pacedMaxMs: 40_000,
    pacedGapMs: 20,
    trials: 3,
    throughputMs: 1_500,
    windows: [1, 50],
    echoClients: 1_000,
    echoRate: 2_000,
    echoMs: 4_000,
    rampStartRate: 500,
    rampFactor: 1.5,
    rampStepMs: 2_000,
    // 30k through nginx: 4 nginx workers under a 20,000-descriptor hard limit (harness/nginx.ts
    // workersUnderCap), 2 generator children, about a minute at the rates this machine takes.
    rampMax: 30_000,
    rampHoldMs: 10_000,
    rampHoldRate: 1,
    memoryClients: 10_000,
    memorySettleMs: 3_000,
    // The second on processes of its own: a process keeps the pages its first clients used.
    memoryRounds: 2,
    heapDiff: 1_000,
    scalingClients: 10_000,
    scalingConnectRate: 1_000,
    // One Engine.IO ping interval: every client's heartbeat falls in the window once.
    scalingIdleMs: 25_000,
    scalingPaced: 40,
    scalingBurstMs: 3_000,
    scalingWindow: 4,
    // /proc counts CPU in 10 ms ticks: enough publishes for Redis to spend a second or so.
    scalingPublishes: 20_000,
    scalingSubscribers: [0, 12, 60],
    drainClients: 4_000,
    // 12k frames/s: well under what the stack delivers on 2 cores (the wave, not an overload).
    drainRate: 3,
    drainForcedSec: 3,
    abuseReceivers: 200,
    abuseBaselineMs: 3_000,
    abuseFloodMs: 6_000,
    abusePingMs: 10_000,
    abuseProbeGapMs: 60,
    abuseBystanders: 1_000,
    // HISTORY_SIZE's default: a replay from the oldest offset carries all of it.
    abuseFill: 1_000,
    abuseReplayMs: 25_000,
    abuseReplayRequests: 15,
    abuseAddressMs: 20_000,
    abuseAddressConns: 50,
    // Under the default per-connection limit of 20 a second.
    abuseAddressRate: 15,
    abuseAddressBytes: 32 * 1024,
    profile: true,
  },
};

export const USAGE = `npm run bench -- [options]

  --quick                 smoke preset (about two minutes); default is the full run (about twenty minutes, the scaling figures included)
  --targets a,b           ${TARGET_NAMES.join(",")} (default: all but ${OPT_IN_TARGETS.join(", ")})
  --scenarios a,b         ${SCENARIOS.join(",")} (default: all)
  --sizes 1000,5000       fan-out client counts
  --payload BYTES         broadcast text size
  --duration MS           one saturated fan-out trial (per target, size and window; a trial also waits for what is in flight)
  --trials N              saturated trials per target, size and window, and rounds of the paced phase; the median is reported
  --window 1,50           broadcasts in flight in the saturated phases (default 1 and 50: a lone broadcast, a burst)
  --paced N               paced broadcasts per target and size (latency, completion time), over the rounds
  --paced-max MS          time cap of the paced phase at one size, all targets (at least 3 broadcasts a round each)
  --echo-clients N  --echo-rate N/s  --echo-ms MS
  --ramp-start N/s  --ramp-factor F  --ramp-step MS  --ramp-max N
  --ramp-hold MS  --ramp-hold-rate N/s   broadcasts to every client held at the top of the ramp
  --memory-clients N  --memory-settle MS  --memory-rounds N   (rounds after the first on fresh processes; full run: 2)
  --heap-diff N           heap snapshots around N idle clients, growth by constructor (0: off; full run: 1000)
  --scaling-clients N  --scaling-connect-rate N/s  --scaling-idle MS  --scaling-paced N  --scaling-burst MS  --scaling-window N
  --scaling-publishes N  --scaling-subscribers 0,12,60   Redis CPU per publish with that many more subscribers
  --drain-clients N  --drain-rate N/s  --drain-forced SEC
  --abuse-receivers N  --abuse-baseline MS  --abuse-flood MS  --abuse-ping MS  --abuse-probe-gap MS
  --abuse-bystanders N  --abuse-fill N   the attacks on sio-4-nginx: bystanders, history entries of 64 KiB filled first
  --abuse-replay MS  --abuse-replay-requests N   replay attack: unread replays of the whole history, evenly over MS
  --abuse-address MS  --abuse-address-conns N  --abuse-address-rate N/s  --abuse-address-bytes BYTES   address flood from one address
  --profile / --no-profile   CPU profiles of each target (default: on in the full run)
  --before DIR            an earlier checkout (git worktree add DIR <commit>; ln -s $PWD/node_modules DIR/): its server
                          runs as ws-1-before and sio-1-before in the fan-out, for before/after ratios and profiles,
                          and its stack as sio-4-nginx-before in the abuse scenario's attacks
  --children N            generator processes (default: as needed, at least 2)
  --spread-after N        connections to one destination from 127.0.0.1; the rest from 127.0.0.2–61 (default 4000)
  --out DIR               results directory (default bench/results)
  --help
`;

function list<T extends string>(value: string | undefined, allowed: readonly T[], what: string): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = items.filter((s) => !allowed.includes(s as T));
  if (bad.length > 0) throw new Error(`unknown ${what}: ${bad.join(", ")} (known: ${allowed.join(", ")})`);
  return items as T[];
}

function num(value: string | undefined, name: string, fallback: number, { min = 0 } = {}): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min} (got ${JSON.stringify(value)})`);
  return n;
}

/** Parses argv; throws an Error that names every bad option it meets first. */
export function parseOptions(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: "boolean" },
      targets: { type: "string" },
      scenarios: { type: "string" },
      sizes: { type: "string" },
      payload: { type: "string" },
      duration: { type: "string" },
      trials: { type: "string" },
      window: { type: "string" },
      paced: { type: "string" },
      "paced-max": { type: "string" },
      "echo-clients": { type: "string" },
      "echo-rate": { type: "string" },
      "echo-ms": { type: "string" },
      "ramp-start": { type: "string" },
      "ramp-factor": { type: "string" },
      "ramp-step": { type: "string" },
      "ramp-max": { type: "string" },
      "ramp-hold": { type: "string" },
      "ramp-hold-rate": { type: "string" },
      "memory-clients": { type: "string" },
      "memory-settle": { type: "string" },
      "memory-rounds": { type: "string" },
      "heap-diff": { type: "string" },
      "scaling-clients": { type: "string" },
      "scaling-connect-rate": { type: "string" },
      "scaling-idle": { type: "string" },
      "scaling-paced": { type: "string" },
      "scaling-burst": { type: "string" },
      "scaling-window": { type: "string" },
      "scaling-publishes": { type: "string" },
      "scaling-subscribers": { type: "string" },
      "drain-clients": { type: "string" },
      "drain-rate": { type: "string" },
      "drain-forced": { type: "string" },
      "abuse-receivers": { type: "string" },
      "abuse-baseline": { type: "string" },
      "abuse-flood": { type: "string" },
      "abuse-ping": { type: "string" },
      "abuse-probe-gap": { type: "string" },
      "abuse-bystanders": { type: "string" },
      "abuse-fill": { type: "string" },
      "abuse-replay": { type: "string" },
      "abuse-replay-requests": { type: "string" },
      "abuse-address": { type: "string" },
      "abuse-address-conns": { type: "string" },
      "abuse-address-rate": { type: "string" },
      "abuse-address-bytes": { type: "string" },
      profile: { type: "boolean" },
      "no-profile": { type: "boolean" },
      before: { type: "string" },
      children: { type: "string" },
      "spread-after": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const preset = values.quick ? "quick" : "full";
  const p = PRESETS[preset];
  const counts = (value: string, name: string) =>
    value.split(",").map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: ${JSON.stringify(s)} is not a count ≥ 1`);
      return n;
    });
  const sizes = values.sizes ? counts(values.sizes, "sizes") : p.sizes;
  const windows = values.window ? counts(values.window, "window") : p.windows;
  const before = values.before === undefined ? undefined : path.resolve(values.before);
  if (before !== undefined && !existsSync(path.join(before, "server", "main.ts")))
    throw new Error(`--before: ${before} has no server/main.ts (a checkout of this repository, with node_modules linked in)`);
  const defaultTargets = TARGET_NAMES.filter((t) => !OPT_IN_TARGETS.includes(t) || (before !== undefined && BEFORE_TARGETS.includes(t)));
  const o: Options = {
    ...p,
    preset,
    targets: list(values.targets, TARGET_NAMES, "target") ?? defaultTargets,
    scenarios: list(values.scenarios, SCENARIOS, "scenario") ?? [...SCENARIOS],
    sizes: [...new Set(sizes)].sort((a, b) => a - b),
    payloadBytes: num(values.payload, "payload", p.payloadBytes, { min: 24 }),
    throughputMs: num(values.duration, "duration", p.throughputMs, { min: 100 }),
    windows: [...new Set(windows)].sort((a, b) => a - b),
    trials: Math.round(num(values.trials, "trials", p.trials, { min: 1 })),
    pacedCount: num(values.paced, "paced", p.pacedCount, { min: 1 }),
    pacedMaxMs: num(values["paced-max"], "paced-max", p.pacedMaxMs, { min: 100 }),
    echoClients: num(values["echo-clients"], "echo-clients", p.echoClients, { min: 1 }),
    echoRate: num(values["echo-rate"], "echo-rate", p.echoRate, { min: 1 }),
    echoMs: num(values["echo-ms"], "echo-ms", p.echoMs, { min: 100 }),
    rampStartRate: num(values["ramp-start"], "ramp-start", p.rampStartRate, { min: 1 }),
    rampFactor: num(values["ramp-factor"], "ramp-factor", p.rampFactor, { min: 1.05 }),
    rampStepMs: num(values["ramp-step"], "ramp-step", p.rampStepMs, { min: 100 }),
    rampMax: num(values["ramp-max"], "ramp-max", p.rampMax, { min: 1 }),
    rampHoldMs: num(values["ramp-hold"], "ramp-hold", p.rampHoldMs, { min: 100 }),
    rampHoldRate: num(values["ramp-hold-rate"], "ramp-hold-rate", p.rampHoldRate, { min: 0.1 }),
    memoryClients: num(values["memory-clients"], "memory-clients", p.memoryClients, { min: 1 }),
    memorySettleMs: num(values["memory-settle"], "memory-settle", p.memorySettleMs),
    memoryRounds: Math.round(num(values["memory-rounds"], "memory-rounds", p.memoryRounds, { min: 1 })),
    heapDiff: num(values["heap-diff"], "heap-diff", p.heapDiff),
    scalingClients: Math.round(num(values["scaling-clients"], "scaling-clients", p.scalingClients, { min: 1 })),
    scalingConnectRate: num(values["scaling-connect-rate"], "scaling-connect-rate", p.scalingConnectRate, { min: 1 }),
    scalingIdleMs: num(values["scaling-idle"], "scaling-idle", p.scalingIdleMs, { min: 100 }),
    scalingPaced: Math.round(num(values["scaling-paced"], "scaling-paced", p.scalingPaced, { min: 1 })),
    scalingBurstMs: num(values["scaling-burst"], "scaling-burst", p.scalingBurstMs, { min: 100 }),
    scalingWindow: Math.round(num(values["scaling-window"], "scaling-window", p.scalingWindow, { min: 1 })),
    scalingPublishes: Math.round(num(values["scaling-publishes"], "scaling-publishes", p.scalingPublishes, { min: 10 })),
    scalingSubscribers: values["scaling-subscribers"]
      ? [
          ...new Set(
            values["scaling-subscribers"].split(",").map((s) => {
              const n = Number(s);
              if (!Number.isInteger(n) || n < 0 || n > 1_000) throw new Error(`--scaling-subscribers: ${JSON.stringify(s)} is not a count 0–1000`);
              return n;
            }),
          ),
        ].sort((a, b) => a - b)
      : p.scalingSubscribers,
    drainClients: num(values["drain-clients"], "drain-clients", p.drainClients, { min: 4 }),
    drainRate: num(values["drain-rate"], "drain-rate", p.drainRate, { min: 1 }),
    drainForcedSec: num(values["drain-forced"], "drain-forced", p.drainForcedSec, { min: 0.1 }),
    abuseReceivers: Math.round(num(values["abuse-receivers"], "abuse-receivers", p.abuseReceivers, { min: 1 })),
    abuseBaselineMs: num(values["abuse-baseline"], "abuse-baseline", p.abuseBaselineMs, { min: 200 }),
    abuseFloodMs: num(values["abuse-flood"], "abuse-flood", p.abuseFloodMs, { min: 200 }),
    abusePingMs: num(values["abuse-ping"], "abuse-ping", p.abusePingMs, { min: 200 }),
    abuseProbeGapMs: num(values["abuse-probe-gap"], "abuse-probe-gap", p.abuseProbeGapMs, { min: 5 }),
    abuseBystanders: Math.round(num(values["abuse-bystanders"], "abuse-bystanders", p.abuseBystanders, { min: 1 })),
    abuseFill: Math.round(num(values["abuse-fill"], "abuse-fill", p.abuseFill, { min: 1 })),
    abuseReplayMs: num(values["abuse-replay"], "abuse-replay", p.abuseReplayMs, { min: 200 }),
    abuseReplayRequests: Math.round(num(values["abuse-replay-requests"], "abuse-replay-requests", p.abuseReplayRequests, { min: 1 })),
    abuseAddressMs: num(values["abuse-address"], "abuse-address", p.abuseAddressMs, { min: 200 }),
    abuseAddressConns: Math.round(num(values["abuse-address-conns"], "abuse-address-conns", p.abuseAddressConns, { min: 1 })),
    abuseAddressRate: num(values["abuse-address-rate"], "abuse-address-rate", p.abuseAddressRate, { min: 0.1 }),
    abuseAddressBytes: Math.round(num(values["abuse-address-bytes"], "abuse-address-bytes", p.abuseAddressBytes, { min: 16 })),
    profile: values["no-profile"] ? false : values.profile ? true : p.profile,
    before,
    children: num(values.children, "children", 0),
    // 127.0.0.1's source ports are shared with nginx's connections to the instances (and
    // TIME_WAIT leftovers): with 15,358 clients through nginx from 127.0.0.1 alone, connects
    // failed (socket hang up) before nginx hit a limit of its own; with 4,000 it is nginx's
    // worker_connections that stops the ramp.
    spreadAfter: num(values["spread-after"], "spread-after", 4_000, { min: 100 }),
    out: values.out ?? "bench/results",
  };
  if (before === undefined && o.targets.some((t) => BEFORE_TARGETS.includes(t))) throw new Error(`${BEFORE_TARGETS.join(", ")} need --before DIR`);
  return o;
}
