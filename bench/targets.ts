import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type InstanceProcess, startInstance } from "../harness/instance.js";
import type { NginxLimits } from "../harness/nginx.js";
import { freePort } from "../harness/ports.js";
import { onCleanup, spawnChild, stopChild } from "../harness/processes.js";
import { childPids, pidsListeningOn } from "../harness/procfs.js";
import { type Stack, type StackEvent, startStack } from "../harness/stack.js";
import { poll } from "../harness/waiting.js";
import type { Kind } from "./generator/protocol.js";
import { inspectorUrlFrom } from "./lib/inspector.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

export const TARGET_NAMES = [
  "raw",
  "sio-stock",
  "ws-1-before",
  "ws-1",
  "sio-1-before",
  "sio-1",
  "sio-1-nohist",
  "sio-4-direct",
  "sio-4-direct-nohist",
  "sio-4-nginx-before",
  "sio-4-nginx",
] as const;
export type TargetName = (typeof TARGET_NAMES)[number];
/**
 * The server of an earlier checkout (--before DIR), beside this one's: before/after ratios and
 * profiles in the fan-out, and its stack in the abuse scenario's attacks.
 */
export const BEFORE_TARGETS: readonly TargetName[] = ["ws-1-before", "sio-1-before", "sio-4-nginx-before"];
/** Measured only when --targets names them (a third stack costs the default runs too much), or, the before targets, with --before. */
export const OPT_IN_TARGETS: readonly TargetName[] = ["sio-4-direct-nohist", ...BEFORE_TARGETS];
/** This checkout's target that a before target is the earlier version of. */
export const AFTER_OF: Partial<Record<TargetName, TargetName>> = { "ws-1-before": "ws-1", "sio-1-before": "sio-1", "sio-4-nginx-before": "sio-4-nginx" };

export const TARGET_LABELS: Record<TargetName, string> = {
  raw: "baseline: bare ws broadcast server (bench/raw-ws-server.ts)",
  "sio-stock": "reference: stock Socket.IO, nothing of ours (bench/sio-stock-server.ts)",
  "ws-1-before": "1 instance of the --before checkout, /ws",
  "ws-1": "1 instance, /ws",
  "sio-1-before": "1 instance of the --before checkout, Socket.IO (websocket)",
  "sio-1": "1 instance, Socket.IO (websocket)",
  "sio-1-nohist": "1 instance, Socket.IO (websocket), HISTORY_SIZE=0: history and recovery off (fan-out only)",
  "sio-4-direct": "4 instances + Redis, Socket.IO, direct",
  "sio-4-direct-nohist": "4 instances + Redis, Socket.IO, direct, HISTORY_SIZE=0: history and recovery off (fan-out only; opt-in)",
  "sio-4-nginx-before": "4 instances + Redis of the --before checkout, Socket.IO, via nginx (its own harness/stack.ts; the abuse scenario's attacks only)",
  "sio-4-nginx": "4 instances + Redis, Socket.IO, via nginx",
};

/** One thing to measure: where clients connect, where the publisher connects, which processes serve it. */
export interface Target {
  readonly name: TargetName;
  readonly label: string;
  readonly kind: Kind;
  /** Clients go round-robin over these base URLs. */
  readonly clientUrls: string[];
  readonly publishUrl: string;
  /** Serving processes by role, for CPU figures (read each time: instances may be replaced). */
  processes(): Record<string, number[]>;
  /** Inspector ws:// URLs of the serving Node processes, by name (when started with inspect). */
  inspectors(): { name: string; url: string }[];
  /** The service's instances behind it (none for the reference servers): GET /metrics, RSS, log records. */
  instances(): ServiceInstance[];
}

/** One instance of the service, as the scenarios that read its state see it. */
export interface ServiceInstance {
  readonly id: string;
  readonly pid: number;
  /** Its own base URL (not nginx's). */
  readonly url: string;
  /** Its JSON log records so far (a live array). */
  readonly logs: readonly unknown[];
}

/** Processes that serve one or more targets; stop() ends all of them. */
export interface Host {
  readonly targets: Target[];
  stop(): Promise<void>;
}

export interface HostOptions {
  /** Start Node servers with --inspect=127.0.0.1:0 (forced GC, memory, profiles over the inspector). */
  inspect: boolean;
}

export interface InstanceHostOptions extends HostOptions {
  /** The service's abuse limits at their defaults (the abuse scenario); otherwise off (INSTANCE_ENV). */
  defaultLimits?: boolean;
}

const nodeOptions = (inspect: boolean): Record<string, string> =>
  inspect ? { NODE_OPTIONS: [process.env.NODE_OPTIONS, "--inspect=127.0.0.1:0"].filter(Boolean).join(" ") } : {};

const waitForInspector = (lines: readonly string[]): Promise<string> =>
  poll(() => inspectorUrlFrom(lines), { timeoutMs: 5_000, everyMs: 20, what: "the process's inspector URL" });

/** A reference server of ours (bench/raw-ws-server.ts, bench/sio-stock-server.ts) as a process of its own. */
export async function startScriptHost(which: "raw" | "sio-stock", opts: HostOptions): Promise<Host> {
  const script = which === "sio-stock" ? "bench/sio-stock-server.ts" : "bench/raw-ws-server.ts";
  const port = await freePort();
  const child = spawnChild(process.execPath, ["--import", "tsx", script], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), ...nodeOptions(opts.inspect) },
    name: script,
  });
  const stop = () => stopChild(child.proc, child.exited, 3_000);
  const forget = onCleanup(script, stop);
  await child.output.find((line) => line.startsWith("listening "), 30_000, `${script} to listen`);
  const inspector = opts.inspect ? await waitForInspector(child.output.items) : undefined;
  const url = `http://127.0.0.1:${port}`;
  const pid = child.pid;
  return {
    targets: [
      {
        name: which,
        label: TARGET_LABELS[which],
        kind: which === "sio-stock" ? "sio" : "raw",
        clientUrls: [url],
        publishUrl: url,
        processes: () => ({ server: [pid] }),
        inspectors: () => (inspector ? [{ name: which, url: inspector }] : []),
        instances: () => [],
      },
    ],
    async stop() {
      await stop();
      forget();
    },
  };
}

/** Every instance the bench starts: no periodic notifications in the measurements, warnings only in the logs. */
const BENCH_ENV = { PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "warn" };

/**
 * The instances of the benchmarks (fanout, echo, memory, ramp, drain) run
 * with the abuse limits off. They measure the delivery path: the publisher
 * sends as fast as a scenario wants from one connection (saturated fan-out:
 * thousands of messages a second), which the per-connection rate limit
 * (RATE_LIMIT_MESSAGES_PER_SEC, default 20/s) would refuse and then
 * disconnect, and the ramp holds more connections than MAX_CONNECTIONS may
 * allow. The abuse scenario measures the limits themselves, on instances of
 * its own started with BENCH_ENV only: every limit at its default.
 */
const INSTANCE_ENV = { ...BENCH_ENV, RATE_LIMIT_MESSAGES_PER_SEC: "0", MAX_CONNECTIONS: "0" };

const instanceEnv = (opts: InstanceHostOptions) => (opts.defaultLimits ? BENCH_ENV : INSTANCE_ENV);

/**
 * nginx's per-address limits, lifted on the benchmark stacks for the same
 * reason: past --spread-after connections the clients come from 127.0.0.2–61,
 * which nginx.conf does not exempt (only 127.0.0.1), so the full run's ramp
 * and 10k fan-out would meet its limit on new sessions a second and stop at a
 * 429, not at what the stack holds. The abuse scenario's stack keeps them as
 * shipped (its clients come from 127.0.0.1: exempt either way). 65535 is the
 * most limit_conn takes.
 */
const NO_NGINX_LIMITS: NginxLimits = { connPerAddress: 65_535, sessionsPerSec: 100_000, burst: 100_000 };

const serviceInstance = (inst: InstanceProcess, url = inst.url): ServiceInstance => ({ id: inst.id, pid: inst.pid, url, logs: inst.logs });

/**
 * One instance of the service without Redis; its /ws or its Socket.IO is the
 * target. `sio-1-nohist` is `sio-1` with HISTORY_SIZE=0: what the history
 * costs the fan-out.
 */
export async function startSingleInstance(
  which: "ws-1" | "sio-1" | "sio-1-nohist" | "ws-1-before" | "sio-1-before",
  opts: InstanceHostOptions & { before?: string },
): Promise<Host> {
  const port = await freePort();
  const env = {
    ...instanceEnv(opts),
    ...(which === "sio-1-nohist" ? { HISTORY_SIZE: "0" } : {}),
    PORT: String(port),
    INSTANCE_ID: `bench-${which}${opts.defaultLimits ? "-limits" : ""}`,
    ...nodeOptions(opts.inspect),
  };
  let instance: InstanceProcess;
  if (BEFORE_TARGETS.includes(which)) {
    if (!opts.before) throw new Error(`${which} needs --before DIR`);
    // That checkout's own harness starts its server (server/main.ts there, through tsx), as its tests do.
    const harness = (await import(pathToFileURL(path.join(opts.before, "harness", "instance.ts")).href)) as { startInstance: typeof startInstance };
    instance = await harness.startInstance({ env });
  } else {
    instance = await startInstance({ env });
  }
  const forget = onCleanup(`instance ${which}`, () => instance.stop(5_000));
  const inspector = opts.inspect ? await waitForInspector(instance.otherOutput) : undefined;
  return {
    targets: [
      {
        name: which,
        label: TARGET_LABELS[which],
        kind: which.startsWith("ws-") ? "ws" : "sio",
        clientUrls: [instance.url],
        publishUrl: instance.url,
        processes: () => ({ instance: [instance.pid] }),
        inspectors: () => (inspector ? [{ name: instance.id, url: inspector }] : []),
        instances: () => [serviceInstance(instance)],
      },
    ],
    async stop() {
      await instance.stop(5_000);
      forget();
    },
  };
}

/** The earlier checkout's own harness/stack.ts starts its stack (its server, its nginx.conf), as its tests do. */
async function beforeStartStack(which: TargetName, before: string | undefined): Promise<typeof startStack> {
  if (!before) throw new Error(`${which} needs --before DIR`);
  const harness = (await import(pathToFileURL(path.join(before, "harness", "stack.ts")).href)) as { startStack: typeof startStack };
  return harness.startStack;
}

export interface ClusterHost extends Host {
  readonly stack: Stack;
  /** nginx's error.log, summarised: message (addresses and ids stripped) → count. */
  nginxErrors(): Record<string, number>;
  /** Stack lifecycle events, for the drain scenario. */
  onEvent(listener: (e: StackEvent) => void): () => void;
  /** Its processes by role, for memory and CPU by role: instances, nginx master, nginx workers, redis (read each time). */
  roles(): Record<string, number[]>;
}

/**
 * Four instances, Redis and nginx (harness/stack.ts), as one target:
 * clients straight to the instances (spread evenly, the publisher on ws1), or
 * everyone through nginx. The two targets need stacks of their own: on one,
 * a broadcast of either would also reach the other's clients.
 */
export async function startClusterHost(
  which: "sio-4-direct" | "sio-4-direct-nohist" | "sio-4-nginx" | "sio-4-nginx-before",
  opts: InstanceHostOptions & { forcedShutdownSec: number; before?: string },
): Promise<ClusterHost> {
  const listeners = new Set<(e: StackEvent) => void>();
  const start = BEFORE_TARGETS.includes(which) ? await beforeStartStack(which, opts.before) : startStack;
  // On ports below the ephemeral range, as the stack picks them (harness/ports.ts).
  const stack = await start({
    // LOG_LEVEL info on the benchmark stacks (their lifecycle lines): nothing on the message
    // path logs at info, so this costs nothing in the measurements. The abuse scenario's
    // stack logs warnings only, as its single instances do.
    env: {
      ...instanceEnv(opts),
      ...(opts.defaultLimits ? {} : { LOG_LEVEL: "info" }),
      ...(which === "sio-4-direct-nohist" ? { HISTORY_SIZE: "0" } : {}),
      FORCED_SHUTDOWN_AFTER_SEC: String(opts.forcedShutdownSec),
      ...nodeOptions(opts.inspect),
    },
    ...(opts.defaultLimits ? {} : { nginxLimits: NO_NGINX_LIMITS }),
    onEvent: (e) => {
      for (const l of listeners) l(e);
    },
  });
  const forget = onCleanup("stack", () => stack.stop({ graceMs: 5_000 }));
  const redisPids = stack.redis ? pidsListeningOn(stack.redis.port) : [];
  const inspectorOf = new Map<InstanceProcess, string>();
  const inspectors = (): { name: string; url: string }[] => {
    const out: { name: string; url: string }[] = [];
    for (const inst of stack.instances) {
      let url = inspectorOf.get(inst);
      if (!url) {
        url = inspectorUrlFrom(inst.otherOutput);
        if (url) inspectorOf.set(inst, url);
      }
      if (url) out.push({ name: inst.id, url });
    }
    return out;
  };
  const processes = (): Record<string, number[]> => {
    const groups: Record<string, number[]> = {};
    for (const inst of stack.instances) groups[inst.id] = [inst.pid];
    groups.redis = redisPids;
    groups.nginx = [stack.nginxPid, ...childPids(stack.nginxPid)];
    return groups;
  };
  const direct = stack.instances.map((_, i) => stack.instanceUrl(i));
  const instances = () => stack.instances.map((inst, i) => serviceInstance(inst, stack.instanceUrl(i)));
  return {
    stack,
    roles: () => ({
      instances: stack.instances.map((i) => i.pid),
      "nginx master": [stack.nginxPid],
      "nginx workers": childPids(stack.nginxPid),
      redis: redisPids,
    }),
    nginxErrors() {
      const out: Record<string, number> = {};
      let text = "";
      try {
        text = readFileSync(stack.nginxErrorLog, "utf8");
      } catch {
        return out;
      }
      for (const line of text.split("\n")) {
        const m = /\[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$/.exec(line);
        if (!m || m[1] === "notice" || m[1] === "info") continue;
        const key = `[${m[1]}] ${m[2]!
          .replace(/\d+\.\d+\.\d+\.\d+(:\d+)?/g, "<addr>")
          .replace(/\(\d+: /, "(")
          .slice(0, 140)}`;
        out[key] = (out[key] ?? 0) + 1;
      }
      return out;
    },
    onEvent(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    targets: [
      which !== "sio-4-nginx" && which !== "sio-4-nginx-before"
        ? { name: which, label: TARGET_LABELS[which], kind: "sio", clientUrls: direct, publishUrl: direct[0]!, processes, inspectors, instances }
        : { name: which, label: TARGET_LABELS[which], kind: "sio", clientUrls: [stack.url], publishUrl: stack.url, processes, inspectors, instances },
    ],
    async stop() {
      await stack.stop({ graceMs: 5_000 });
      forget();
    },
  };
}
