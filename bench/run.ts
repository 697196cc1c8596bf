/**
 * `npm run bench [-- options]`: the benchmark suite. Starts each target as
 * real processes (the bare ws baseline, one instance for /ws, one for
 * Socket.IO, four instances + Redis + nginx), drives them with a load
 * generator of several child processes, prints a table and writes
 * bench/results/<scenario>.json, REPORT.md and latency.svg. Every process it
 * starts is stopped at the end, on errors and on Ctrl+C.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cleanupAll, exitOnSignals, isInterrupted } from "../harness/processes.js";
import { fdLimit, machineLoad } from "../harness/procfs.js";
import { Fleet } from "./generator/fleet.js";
import { setEpoch } from "./lib/clock.js";
import { MachineMeter, mergeReadings } from "./lib/machine.js";
import { Progress } from "./lib/progress.js";
import { type Options, parseOptions, USAGE } from "./options.js";
import { renderConsole, type RunResults, writeResults } from "./report.js";
import { runAbuse } from "./scenarios/abuse.js";
import { runAttacks } from "./scenarios/abuse-attacks.js";
import { type Ctx, Interrupted } from "./scenarios/context.js";
import { runDrain } from "./scenarios/drain.js";
import { runEcho } from "./scenarios/echo.js";
import { runFanout } from "./scenarios/fanout.js";
import { runMemory } from "./scenarios/memory.js";
import { runRamp } from "./scenarios/ramp.js";
import { runScaling } from "./scenarios/scaling.js";
import {
  BEFORE_TARGETS,
  type ClusterHost,
  type Host,
  startClusterHost,
  startScriptHost,
  startSingleInstance,
  type Target,
  TARGET_NAMES,
  type TargetName,
} from "./targets.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Where memory per connection is measured: the baseline, stock Socket.IO and the service's two transports. */
const MEMORY_TARGETS: readonly TargetName[] = ["raw", "sio-stock", "ws-1", "sio-1"];

/** An error message on one line: its lines joined, at most 600 characters. */
const oneLine = (message: string): string => {
  const text = message
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .join(" | ");
  return text.length > 600 ? `${text.slice(0, 599)}…` : text;
};
/** Descriptors a generator child keeps for itself (see worker.ts). */
const CHILD_FD_MARGIN = 300;

async function main(): Promise<number> {
  let opts: Options | "help";
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (opts === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  setEpoch(Math.floor(performance.timeOrigin + performance.now()));
  const progress = new Progress();
  exitOnSignals("bench", () => progress.stop());

  const started = performance.now();
  const out = path.resolve(ROOT, opts.out);
  const load0 = machineLoad();
  const results: RunResults = {
    preset: opts.preset,
    startedAt: new Date().toISOString(),
    durationSec: 0,
    options: opts,
    machine: {
      cores: load0.cores,
      node: process.version,
      fdLimit: fdLimit(),
      load1AtStart: load0.load1,
      load1AtEnd: NaN,
      busy: [],
      generatorChildren: 0,
      generatorCapacity: 0,
    },
    fanout: [],
    profiles: [],
    echo: [],
    memory: [],
    scaling: undefined,
    ramp: undefined,
    drain: undefined,
    abuse: [],
    abuseAttacks: [],
    machineByScenario: {},
    errors: [],
    interrupted: false,
  };
  progress.start();
  const noteLoad = (where: string) => {
    const l = machineLoad();
    if (l.busy) {
      results.machine.busy.push(`${where}: load ${l.load1.toFixed(2)} on ${l.cores} cores`);
      progress.log(`bench: the machine looks busy before ${where} (load average ${l.load1.toFixed(2)} on ${l.cores} cores): figures will be noisy`);
    }
  };
  noteLoad("start");

  const wants = (t: TargetName) => opts.targets.includes(t);
  const has = (s: Options["scenarios"][number]) => opts.scenarios.includes(s);
  const maxSize = opts.sizes[opts.sizes.length - 1] ?? 0;
  const needed = Math.max(
    // Fan-out holds every target's clients at once.
    has("fanout") ? maxSize * opts.targets.length : 0,
    has("echo") ? opts.echoClients : 0,
    has("memory") ? opts.memoryClients : 0,
    has("ramp") ? opts.rampMax : 0,
    has("scaling") ? opts.scalingClients : 0,
    has("drain") ? opts.drainClients : 0,
    has("abuse") ? Math.max(opts.abuseReceivers, opts.abuseBystanders) : 0,
    1,
  );
  const perChild = Math.max(1_000, fdLimit() - CHILD_FD_MARGIN);
  const childCount = opts.children || Math.max(2, Math.ceil(needed / perChild));
  if (maxSize > fdLimit() - 200 && (wants("raw") || wants("ws-1") || wants("sio-1"))) {
    progress.log(`bench: ${maxSize} clients on one server process is close to its descriptor limit (${fdLimit()}): expect refused connections`);
  }

  progress.phase(`starting ${childCount} load-generator processes`);
  const fleet = await Fleet.start(childCount);
  results.machine.generatorChildren = fleet.children.length;
  results.machine.generatorCapacity = fleet.capacity;
  if (fleet.capacity < needed) progress.log(`bench: the generator has room for ${fleet.capacity} connections; ${needed} asked: larger steps will be cut`);

  let seq = 0;
  const ctx: Ctx = { opts, fleet, progress, nextSeq: () => ++seq, out };
  const inspect = has("memory") || opts.profile;

  /** Runs one scenario; an error is recorded and the run goes on (Ctrl+C stops it). The machine's load over it is kept by scenario. */
  const attempt = async <T>(scenario: string, target: string, fn: () => Promise<T>): Promise<T | undefined> => {
    if (isInterrupted()) throw new Interrupted();
    const machine = new MachineMeter().start();
    try {
      return await fn();
    } catch (err) {
      if (isInterrupted() || err instanceof Interrupted) throw new Interrupted();
      // One line, with what follows the first (a process's last output says why it exited).
      const message = oneLine((err as Error).message ?? String(err));
      results.errors.push({ scenario, target, message });
      progress.log(`bench: ${scenario} on ${target} failed: ${message}`);
      await fleet.closeAll().catch(() => undefined);
      return undefined;
    } finally {
      if (scenario !== "start") results.machineByScenario[scenario] = mergeReadings([results.machineByScenario[scenario], machine.stop()])!;
    }
  };

  const hosts = new Map<string, Host>();
  const startHost = async (name: string, start: () => Promise<Host>): Promise<Host | undefined> => {
    const host = await attempt("start", name, start);
    if (host) hosts.set(name, host);
    return host;
  };
  const stopHost = async (name: string): Promise<void> => {
    const host = hosts.get(name);
    if (!host) return;
    hosts.delete(name);
    progress.phase(`stopping ${name}`);
    await host.stop().catch((err: unknown) => results.errors.push({ scenario: "stop", target: name, message: (err as Error).message }));
  };

  let code = 0;
  try {
    // The single-process targets, started together.
    const single = has("fanout") || has("echo") || has("memory");
    const singles: [TargetName, string, () => Promise<Host>][] = [
      ["raw", "baseline server", () => startScriptHost("raw", { inspect })],
      ["sio-stock", "stock Socket.IO server", () => startScriptHost("sio-stock", { inspect })],
      ["ws-1-before", "instance for /ws of the before checkout", () => startSingleInstance("ws-1-before", { inspect, before: opts.before })],
      ["ws-1", "instance for /ws", () => startSingleInstance("ws-1", { inspect })],
      ["sio-1-before", "instance for Socket.IO of the before checkout", () => startSingleInstance("sio-1-before", { inspect, before: opts.before })],
      ["sio-1", "instance for Socket.IO", () => startSingleInstance("sio-1", { inspect })],
      ["sio-1-nohist", "instance for Socket.IO with history off", () => startSingleInstance("sio-1-nohist", { inspect })],
    ];
    const wantedSingles = single ? singles.filter(([t]) => wants(t)) : [];
    // Two stacks (one a cluster target): on one stack, a broadcast on either target would
    // also reach the other's clients.
    const broadcastScenarios = has("fanout") || has("echo");
    const wantDirect = broadcastScenarios && wants("sio-4-direct");
    const wantDirectNoHist = has("fanout") && wants("sio-4-direct-nohist");
    const wantNginx = (broadcastScenarios && wants("sio-4-nginx")) || has("scaling") || has("ramp") || has("drain");
    // An inspector on the instances: profiles, and a forced GC before the memory readings of the scaling and ramp scenarios.
    const clusterOpts = { inspect: opts.profile || has("scaling") || has("ramp"), forcedShutdownSec: opts.drainForcedSec };
    // The abuse scenario's targets: instances of their own with the abuse limits at their
    // defaults (the others run with them off: see targets.ts).
    const abuseHosts: [TargetName, string, () => Promise<Host>][] = [
      ["ws-1", "abuse: instance for /ws", () => startSingleInstance("ws-1", { inspect: false, defaultLimits: true })],
      ["sio-1", "abuse: instance for Socket.IO", () => startSingleInstance("sio-1", { inspect: false, defaultLimits: true })],
      [
        "sio-4-nginx",
        "abuse: stack behind nginx",
        () => startClusterHost("sio-4-nginx", { inspect: false, defaultLimits: true, forcedShutdownSec: opts.drainForcedSec }),
      ],
    ];
    const wantedAbuse = has("abuse") ? abuseHosts.filter(([t]) => wants(t)) : [];
    // The replay and address attacks: a stack of their own (their history filled, nothing left of the
    // floods above), and with --before that checkout's stack, started by its own harness. Each starts
    // right before its attacks and stops after them: one at a time, with nothing else starting.
    const attackOpts = { inspect: false, defaultLimits: true, forcedShutdownSec: opts.drainForcedSec, before: opts.before };
    const attackHosts: [TargetName, string, () => Promise<Host>][] = [
      ["sio-4-nginx-before", "abuse attacks: stack of the before checkout", () => startClusterHost("sio-4-nginx-before", attackOpts)],
      ["sio-4-nginx", "abuse attacks: stack behind nginx", () => startClusterHost("sio-4-nginx", attackOpts)],
    ];
    const wantedAttacks = has("abuse") ? attackHosts.filter(([t]) => wants(t)) : [];
    // Everything starts at once (the stacks take a while on 2 cores); the memory scenario
    // runs on the single-process targets meanwhile: it counts bytes, not time. The abuse
    // scenario's hosts stay idle until the end.
    noteLoad("starting the targets");
    progress.phase(
      `starting ${[...wantedSingles.map(([, n]) => n), ...(wantDirect ? ["stack for direct clients"] : []), ...(wantDirectNoHist ? ["stack with history off"] : []), ...(wantNginx ? ["stack behind nginx"] : []), ...wantedAbuse.map(([, n]) => n)].join(", ")}`,
    );
    const stacks = Promise.all([
      wantDirect ? startHost("stack for direct clients", () => startClusterHost("sio-4-direct", clusterOpts)) : undefined,
      wantDirectNoHist ? startHost("stack with history off", () => startClusterHost("sio-4-direct-nohist", clusterOpts)) : undefined,
      wantNginx ? startHost("stack behind nginx", () => startClusterHost("sio-4-nginx", clusterOpts)) : undefined,
    ]);
    stacks.catch(() => undefined); // awaited below; a rejection now must not count as unhandled
    const abuseStarted = Promise.all(wantedAbuse.map(([, name, start]) => startHost(name, start)));
    abuseStarted.catch(() => undefined);
    await Promise.all(wantedSingles.map(([, name, start]) => startHost(name, start)));
    // In TARGET_NAMES order, whichever started first. By host: the abuse scenario's instances
    // (started meanwhile) answer to the same target names.
    const singleTargets = wantedSingles
      .flatMap(([, name]) => hosts.get(name)?.targets ?? [])
      .sort((a, b) => TARGET_NAMES.indexOf(a.name) - TARGET_NAMES.indexOf(b.name));

    // Memory first, on fresh processes; more rounds on processes started for each.
    if (has("memory")) {
      // History off is for the fan-out's frames a second; the before checkout for its ratios and profiles.
      const measured = singleTargets.filter((t) => MEMORY_TARGETS.includes(t.name));
      for (const t of measured) {
        const m = await attempt("memory", t.name, () => runMemory(ctx, t));
        if (m) results.memory.push(m);
      }
      for (let round = 2; round <= opts.memoryRounds; round++) {
        for (const [name, label, start] of wantedSingles.filter(([t]) => MEMORY_TARGETS.includes(t))) {
          const cell = results.memory.find((m) => m.target === name);
          if (!cell) continue;
          const host = await startHost(`${label}, memory round ${round}`, start);
          const t = host?.targets[0];
          const m = t ? await attempt("memory", name, () => runMemory(ctx, t, { heapDiff: false })) : undefined;
          if (m) cell.rounds.push(...m.rounds);
          await stopHost(`${label}, memory round ${round}`);
        }
      }
    }

    if (wantDirect || wantDirectNoHist || wantNginx || wantedAbuse.length > 0) progress.phase("waiting for the four-instance stacks");
    const [direct, directNoHist, cluster] = (await stacks) as (ClusterHost | undefined)[];
    // Nothing is measured while anything still starts.
    await abuseStarted;
    const all = [
      ...singleTargets,
      ...(direct?.targets ?? []),
      ...(directNoHist?.targets ?? []),
      ...(broadcastScenarios && wants("sio-4-nginx") ? (cluster?.targets ?? []) : []),
    ];

    if (has("fanout") && all.length > 0) {
      noteLoad("fan-out");
      const f = await attempt("fanout", all.map((t) => t.name).join(","), () => runFanout(ctx, all));
      if (f) {
        results.fanout.push(...f.cells);
        results.profiles.push(...f.profiles);
        for (const e of f.errors) results.errors.push({ scenario: "fanout", target: e.target, message: e.message });
      }
    }
    if (has("echo")) {
      for (const t of all) {
        // The cluster's echo goes through nginx; history off is for fan-out.
        if (t.name === "sio-4-direct" || t.name.endsWith("-nohist") || BEFORE_TARGETS.includes(t.name)) continue;
        const e = await attempt("echo", t.name, () => runEcho(ctx, t));
        if (e) results.echo.push(e);
      }
    }
    for (const [, name] of wantedSingles) await stopHost(name);
    await stopHost("stack for direct clients");
    await stopHost("stack with history off");

    if (cluster) {
      const viaNginx = cluster.targets[0]!;
      if (has("scaling")) {
        noteLoad("the scaling figures");
        const host = cluster;
        results.scaling = await attempt("scaling", viaNginx.name, () => runScaling(ctx, host));
      }
      if (has("ramp")) {
        noteLoad("the ramp");
        const host = cluster;
        results.ramp = await attempt("ramp", viaNginx.name, () => runRamp(ctx, host));
      }
      if (has("drain")) {
        const host = cluster;
        results.drain = await attempt("drain", viaNginx.name, () => runDrain(ctx, host));
      }
    }
    await stopHost("stack behind nginx");

    if (has("abuse")) {
      // Last: whatever a flood leaves behind cannot touch another scenario.
      const targets: Target[] = wantedAbuse.flatMap(([, name]) => hosts.get(name)?.targets ?? []);
      if (targets.length > 0) {
        noteLoad("the abuse scenario");
        const a = await attempt("abuse", targets.map((t) => t.name).join(","), () => runAbuse(ctx, targets));
        if (a) {
          results.abuse.push(...a.cells);
          for (const e of a.errors) results.errors.push({ scenario: "abuse", target: e.target, message: e.message });
        }
      }
      for (const [, name] of wantedAbuse) await stopHost(name);
      // Then the attacks through nginx, before and after side by side.
      if (wantedAttacks.length > 0) {
        noteLoad("the abuse scenario's attacks");
        const stacks = wantedAttacks.map(([target, name, start]) => ({
          target,
          start: () => startHost(name, start) as Promise<ClusterHost | undefined>,
          stop: () => stopHost(name),
        }));
        const a = await attempt("abuse attacks", wantedAttacks.map(([t]) => t).join(","), () => runAttacks(ctx, stacks));
        if (a) {
          results.abuseAttacks.push(...a.cells);
          for (const e of a.errors) results.errors.push({ scenario: "abuse", target: e.target, message: e.message });
        }
      }
    }
  } catch (err) {
    if (!(err instanceof Interrupted)) {
      results.errors.push({ scenario: "run", target: "-", message: (err as Error).message });
      code = 1;
    } else {
      results.interrupted = true;
    }
  } finally {
    for (const name of [...hosts.keys()]) await stopHost(name);
    progress.phase("stopping the load generator");
    await fleet.stop().catch(() => undefined);
    await cleanupAll();
  }
  if (isInterrupted()) return 130;

  results.durationSec = (performance.now() - started) / 1000;
  results.machine.load1AtEnd = machineLoad().load1;
  progress.stop();
  const files = await writeResults(out, results);
  process.stdout.write(`${renderConsole(results)}\n\nwrote ${files.map((f) => path.relative(process.cwd(), f)).join(", ")}\n`);
  if (results.errors.length > 0) code = 1;
  return code;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Timers of finished clients may linger a moment; nothing we started is left.
    setTimeout(() => process.exit(code), 500).unref();
  },
  async (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    await cleanupAll();
    process.exit(1);
  },
);
