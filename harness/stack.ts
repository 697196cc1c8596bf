import { execFile } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type Exit, spawnChild } from "./child.js";
import { canConnect, freePortRange, isFree } from "./free-port.js";
import { listensOn } from "./listeners.js";
import { type InstanceProcess, startInstance } from "./instance.js";
import { type RedisProcess, startRedis } from "./redis-server.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** The nginx.conf that docker compose mounts: the stack runs this very file. */
export const NGINX_CONF = path.join(ROOT, "nginx.conf");
export const INSTANCE_COUNT = 4;
/** How long an instance may take from spawn to answering /readyz. */
const START_TIMEOUT_MS = 60_000;

const run = promisify(execFile);

export interface Stack {
  /** http://127.0.0.1:<nginxPort> */
  readonly url: string;
  readonly nginxPort: number;
  /** The nginx master process. */
  readonly nginxPid: number;
  readonly redisUrl: string;
  /** undefined when a REDIS_URL was given. */
  readonly redis: RedisProcess | undefined;
  /** Index i -> INSTANCE_ID `ws${i+1}` on port basePort+i+1. The same array throughout; restarts replace its entries. */
  readonly instances: InstanceProcess[];
  /** Direct URL of instance i (bypassing nginx). */
  instanceUrl(i: number): string;
  /**
   * Drain instance i (SIGTERM), wait for it to exit (it exits when its last
   * client leaves or at FORCED_SHUTDOWN_AFTER_SEC; SIGKILL if it overstays
   * that by the stop grace), start its replacement on the same port with the
   * same env, resolve when the replacement's /readyz answers 200.
   * Restarts of the same index queue up behind each other.
   */
  restartInstance(i: number): Promise<void>;
  /** restartInstance(0..3) one after the other. */
  rollingRestart(): Promise<void>;
  /**
   * SIGTERM every instance (they drain; one already draining is not signalled
   * again), wait for them (SIGKILL after `graceMs`, by default the drain
   * deadline plus 15 s), then stop nginx and the redis-server it started.
   * Idempotent; leaves no process running.
   */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

export type StackEvent =
  /** Spawned (its log records are in `instance.logs` as they come). */
  | { type: "instance-starting"; index: number; instance: InstanceProcess; restart: boolean }
  /** A replacement (or one of the first four) answers /readyz 200. */
  | { type: "instance-ready"; index: number; instance: InstanceProcess; restart: boolean }
  /** SIGTERM sent: it drains. */
  | { type: "instance-draining"; index: number; instance: InstanceProcess }
  /** It exited; `expected` is false when nobody asked it to (a crash). */
  | { type: "instance-exited"; index: number; instance: InstanceProcess; exit: Exit; expected: boolean }
  | { type: "nginx-exited"; exit: Exit; expected: boolean };

export interface StackOptions {
  /** nginx on basePort, instance i on basePort+i+1. Default: a free range. */
  basePort?: number;
  /** More environment for every instance (PORT, HOST, INSTANCE_ID and REDIS_URL are set by the stack). */
  env?: Record<string, string>;
  /** Use this Redis instead of starting one. */
  redisUrl?: string;
  /** Lifecycle notifications (the CLI prints them). Must not throw. */
  onEvent?: (event: StackEvent) => void;
  /** Other nginx per-address limits than shipped (tests use small ones); see NginxLimits. Unset: as shipped. */
  nginxLimits?: NginxLimits;
}

/**
 * nginx's per-address limits, substituted into the shipped directives
 * `limit_conn per_addr <n>;`, `limit_req_zone <key> zone=new_sessions:<size> rate=<n>r/s;`
 * and `limit_req zone=new_sessions burst=<n> ...;` (every location that has
 * it). A field left unset keeps the shipped value.
 */
export interface NginxLimits {
  /** Concurrent proxied requests, WebSockets included, per client address (`limit_conn per_addr`). */
  connPerAddress?: number;
  /** New sessions (Engine.IO handshakes without a sid, /ws upgrades) per second per address (`rate=`). */
  sessionsPerSec?: number;
  /** New sessions allowed over the rate at once (`burst=`). */
  burst?: number;
}

/**
 * Renders the shipped nginx.conf for a loopback run: the upstream servers
 * `wsN:8000` become `127.0.0.1:<basePort+N>`, `listen 8080` becomes
 * `listen 127.0.0.1:<basePort>`, and nginx's temp paths move into `tmpDir`
 * (the packaged defaults under /var/lib/nginx are not ours to write).
 * `maxNofile` lowers worker_rlimit_nofile to what this process may have.
 * `limits` replaces the numbers of the per-address limit directives (see
 * NginxLimits). Nothing else changes. Throws if the source no longer has the
 * expected shape, or lacks a directive that `limits` asks to change.
 */
export function renderNginxConf(source: string, basePort: number, tmpDir: string, opts: { maxNofile?: number; limits?: NginxLimits } = {}): string {
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + INSTANCE_COUNT > 65535) throw new Error(`bad basePort ${basePort}`);
  // Strip comments for matching only, so a comment cannot satisfy (or break) a check.
  const code = source.replace(/#[^\n]*/g, "");
  const upstreamRe = /\bserver\s+ws(\d+):8000\b/g;
  const seen = new Set([...code.matchAll(upstreamRe)].map((m) => Number(m[1])));
  const expected = Array.from({ length: INSTANCE_COUNT }, (_, i) => i + 1);
  if (seen.size !== INSTANCE_COUNT || !expected.every((n) => seen.has(n))) {
    throw new Error(`nginx.conf: expected upstream servers ws1:8000..ws${INSTANCE_COUNT}:8000, found ${[...seen].map((n) => `ws${n}`).join(", ") || "none"}`);
  }
  if ((code.match(/\blisten\s+8080\s*;/g) ?? []).length !== 1) throw new Error("nginx.conf: expected exactly one `listen 8080;`");
  if (!/^\s*http\s*\{/m.test(code)) throw new Error("nginx.conf: no http { } block");
  if (/\b(client_body|proxy|fastcgi|uwsgi|scgi)_temp_path\b/.test(code)) throw new Error("nginx.conf: sets a *_temp_path; renderNginxConf would duplicate it");

  const limits = opts.limits ?? {};
  for (const [name, value] of Object.entries(limits)) {
    if (value !== undefined && (!Number.isInteger(value) || value < (name === "burst" ? 0 : 1))) throw new Error(`nginxLimits.${name}: bad value ${value}`);
  }
  // Each directive asked for must be there, outside comments, in the shape nginx.conf writes it.
  const limitDirectives: { field: keyof NginxLimits; re: RegExp; put: (m: string[], n: number) => string; shape: string }[] = [
    {
      field: "connPerAddress",
      re: /\blimit_conn(\s+)per_addr(\s+)\d+(\s*);/g,
      put: (m, n) => `limit_conn${m[1]}per_addr${m[2]}${n}${m[3]};`,
      shape: "limit_conn per_addr <n>;",
    },
    {
      field: "sessionsPerSec",
      re: /\blimit_req_zone(\s+)(\S+)(\s+)zone=new_sessions:(\w+)(\s+)rate=\d+r\/s(\s*);/g,
      put: (m, n) => `limit_req_zone${m[1]}${m[2]}${m[3]}zone=new_sessions:${m[4]}${m[5]}rate=${n}r/s${m[6]};`,
      shape: "limit_req_zone <key> zone=new_sessions:<size> rate=<n>r/s;",
    },
    {
      field: "burst",
      re: /\blimit_req(\s+)zone=new_sessions(\s+)burst=\d+([^;]*);/g,
      put: (m, n) => `limit_req${m[1]}zone=new_sessions${m[2]}burst=${n}${m[3]};`,
      shape: "limit_req zone=new_sessions burst=<n> ...;",
    },
  ];
  for (const d of limitDirectives) {
    if (limits[d.field] !== undefined && !new RegExp(d.re.source).test(code)) {
      throw new Error(`nginx.conf: nginxLimits.${d.field} is set but there is no \`${d.shape}\` directive to change`);
    }
  }

  const tmp = tmpDir.replace(/\/+$/, "");
  if (/[\s;{}"'#$]/.test(tmp)) throw new Error(`tmpDir ${JSON.stringify(tmpDir)} cannot be used in nginx.conf unquoted`);
  const tempPaths = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((kind) => `    ${kind}_temp_path ${tmp}/${kind}_temp;`)
    .join("\n");

  let out = "";
  let placed = false;
  // Substitute line by line, leaving comment text untouched.
  for (const line of source.split("\n")) {
    const hash = line.indexOf("#");
    let codePart = hash === -1 ? line : line.slice(0, hash);
    const comment = hash === -1 ? "" : line.slice(hash);
    codePart = codePart
      .replace(/\bserver(\s+)ws(\d+):8000\b/g, (_m, sp: string, n: string) => `server${sp}127.0.0.1:${basePort + Number(n)}`)
      .replace(/\blisten(\s+)8080(\s*);/, (_m, sp: string, sp2: string) => `listen${sp}127.0.0.1:${basePort}${sp2};`);
    for (const d of limitDirectives) {
      const n = limits[d.field];
      if (n !== undefined) codePart = codePart.replace(d.re, (...m: string[]) => d.put(m, n));
    }
    if (opts.maxNofile !== undefined) {
      codePart = codePart.replace(/\bworker_rlimit_nofile(\s+)(\d+)(\s*);/, (m, sp: string, n: string, sp2: string) =>
        Number(n) > opts.maxNofile! ? `worker_rlimit_nofile${sp}${opts.maxNofile}${sp2};` : m,
      );
    }
    let rendered = codePart + comment;
    if (!placed && /^\s*http\s*\{\s*$/.test(codePart)) {
      placed = true;
      rendered += `\n    # Loopback run (scripts/lib/stack.ts): temp files in the stack's own directory.\n${tempPaths}`;
    }
    out += (out === "" ? "" : "\n") + rendered;
  }
  if (!placed) throw new Error("nginx.conf: could not place the temp paths (expected a line `http {`)");
  return out;
}

/** Starts redis (unless given), ws1..ws4 and nginx in front of them on loopback. */
export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const basePort = opts.basePort ?? (await freePortRange(INSTANCE_COUNT + 1));
  const onEvent = opts.onEvent ?? (() => undefined);
  const forcedSec = Number(opts.env?.FORCED_SHUTDOWN_AFTER_SEC || process.env.FORCED_SHUTDOWN_AFTER_SEC || 1800);
  const defaultGraceMs = (Number.isFinite(forcedSec) && forcedSec > 0 ? forcedSec * 1000 : 1_800_000) + 15_000;

  const tmpDir = await mkdtemp(path.join(os.tmpdir(), "ws-stack-"));
  // If this process exits without stop(), child.ts kills the processes; this takes the files.
  const removeTmpDir = (): void => rmSync(tmpDir, { recursive: true, force: true });
  process.on("exit", removeTmpDir);

  let redis: RedisProcess | undefined;
  let nginx: NginxProcess | undefined;
  const instances: InstanceProcess[] = [];
  /** Every instance process that may still run, and whether we sent it SIGTERM. */
  const live = new Map<InstanceProcess, { signalled: boolean; index: number }>();
  const launching = new Set<Promise<unknown>>();
  let stopping: Promise<void> | undefined;
  let stopGraceMs = defaultGraceMs;

  const instanceEnv = (i: number, redisUrl: string): Record<string, string> => ({
    // Behind nginx: the client's address is the last X-Forwarded-For entry.
    TRUST_PROXY: "true",
    ...opts.env,
    PORT: String(basePort + i + 1),
    HOST: "127.0.0.1",
    INSTANCE_ID: `ws${i + 1}`,
    REDIS_URL: redisUrl,
  });

  /** Starts instance i; resolves once it logged "listening" and its /readyz answers 200. */
  const launch = (i: number, redisUrl: string, restart: boolean): Promise<InstanceProcess> => {
    const p = (async () => {
      const inst = await startInstance({ env: instanceEnv(i, redisUrl), waitForListening: false });
      live.set(inst, { signalled: false, index: i });
      onEvent({ type: "instance-starting", index: i, instance: inst, restart });
      void inst.exited.then((exit) => {
        const state = live.get(inst);
        live.delete(inst);
        onEvent({ type: "instance-exited", index: i, instance: inst, exit, expected: Boolean(state?.signalled || stopping) });
      });
      try {
        // Not its "listening" line: LOG_LEVEL may hide it. Generous: four
        // instances compiling TypeScript at once on a busy machine are slow.
        await waitForReady(inst, START_TIMEOUT_MS);
      } catch (err) {
        await killInstance(inst, 2_000);
        throw new Error(`ws${i + 1} (port ${basePort + i + 1}) did not start: ${(err as Error).message}`, { cause: err });
      }
      onEvent({ type: "instance-ready", index: i, instance: inst, restart });
      return inst;
    })();
    launching.add(p);
    void p.then(
      () => launching.delete(p),
      () => launching.delete(p),
    );
    return p;
  };

  const drain = (inst: InstanceProcess): void => {
    const state = live.get(inst);
    if (!state || state.signalled) return;
    state.signalled = true;
    onEvent({ type: "instance-draining", index: state.index, instance: inst });
    inst.signal("SIGTERM");
  };

  /** Waits for an exit, SIGKILL after `graceMs`. */
  const killInstance = async (inst: InstanceProcess, graceMs: number): Promise<Exit> => {
    const state = live.get(inst);
    if (state && !state.signalled) {
      state.signalled = true;
      inst.signal("SIGTERM");
    }
    return waitExit(inst, graceMs);
  };

  const waitExit = async (inst: InstanceProcess, graceMs: number): Promise<Exit> => {
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    const first = await Promise.race([inst.exited, overdue.then(() => undefined)]);
    clearTimeout(timer);
    if (first) return first;
    inst.signal("SIGKILL");
    return inst.exited;
  };

  const stopAll = async (graceMs: number): Promise<void> => {
    const errors: unknown[] = [];
    // Instances first (they drain through nginx), then nginx, then Redis.
    for (const inst of live.keys()) drain(inst);
    await Promise.allSettled([...launching]);
    for (const inst of live.keys()) drain(inst);
    await Promise.all([...live.keys()].map((inst) => waitExit(inst, graceMs)));
    try {
      await nginx?.stop();
    } catch (err) {
      errors.push(err);
    }
    try {
      await redis?.stop();
    } catch (err) {
      errors.push(err);
    }
    await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
    process.removeListener("exit", removeTmpDir);
    if (errors.length > 0) throw errors[0];
  };

  try {
    // nginx workers run as another user when we are root; they need to reach their temp dirs.
    await chmod(tmpDir, 0o755);
    let redisUrl: string;
    if (opts.redisUrl) {
      redisUrl = opts.redisUrl;
    } else {
      redis = await startRedis();
      redisUrl = redis.url;
    }

    const confPath = path.join(tmpDir, "nginx.conf");
    const source = await readFile(NGINX_CONF, "utf8");
    await writeFile(confPath, renderNginxConf(source, basePort, tmpDir, { maxNofile: await hardNofileLimit(), limits: opts.nginxLimits }));

    // The four instances and nginx in parallel; the first failure stops the others at once.
    const parts: Promise<unknown>[] = [
      ...Array.from({ length: INSTANCE_COUNT }, (_, i) => launch(i, redisUrl, false)),
      startNginx({ confPath, tmpDir, port: basePort, onExit: (exit, expected) => onEvent({ type: "nginx-exited", exit, expected }) }),
    ];
    let firstError: { error: unknown } | undefined;
    for (const part of parts) {
      part.catch((error: unknown) => {
        if (firstError) return; // a consequence of the first failure
        firstError = { error };
        for (const inst of live.keys()) killInstance(inst, 2_000).catch(() => undefined);
      });
    }
    const started = await Promise.allSettled(parts);
    if (started[INSTANCE_COUNT]?.status === "fulfilled") nginx = started[INSTANCE_COUNT].value as NginxProcess;
    if (firstError) throw firstError.error;
    for (let i = 0; i < INSTANCE_COUNT; i++) instances.push((started[i] as PromiseFulfilledResult<InstanceProcess>).value);

    const restarts: Promise<void>[] = [];
    const restartInstance = (i: number): Promise<void> => {
      if (!Number.isInteger(i) || i < 0 || i >= INSTANCE_COUNT) return Promise.reject(new RangeError(`no instance ${i}`));
      if (stopping) return Promise.reject(new Error("stack is stopping"));
      const next = (restarts[i] ?? Promise.resolve())
        .catch(() => undefined)
        .then(async () => {
          if (stopping) throw new Error("stack is stopping");
          const old = instances[i]!;
          drain(old);
          await waitExit(old, stopGraceMs);
          if (stopping) throw new Error(`stack stopped while ws${i + 1} restarted`);
          const fresh = await launch(i, redisUrl, true);
          instances[i] = fresh;
          // stop() began while it started: stop() stops it too; tell the caller.
          if (stopping) throw new Error(`stack stopped while ws${i + 1} restarted`);
        });
      restarts[i] = next;
      return next;
    };

    const stack: Stack = {
      url: `http://127.0.0.1:${basePort}`,
      nginxPort: basePort,
      nginxPid: nginx!.pid,
      redisUrl,
      redis,
      instances,
      instanceUrl(i) {
        if (!Number.isInteger(i) || i < 0 || i >= INSTANCE_COUNT) throw new RangeError(`no instance ${i}`);
        return `http://127.0.0.1:${basePort + i + 1}`;
      },
      restartInstance,
      async rollingRestart() {
        for (let i = 0; i < INSTANCE_COUNT; i++) await restartInstance(i);
      },
      stop(stopOpts = {}) {
        if (stopOpts.graceMs !== undefined) stopGraceMs = stopOpts.graceMs;
        stopping ??= stopAll(stopGraceMs);
        return stopping;
      },
    };
    return stack;
  } catch (err) {
    stopping ??= stopAll(2_000);
    await stopping.catch(() => undefined);
    throw err;
  }
}


/** GET /readyz until it answers 200 (bounded; fails at once if the instance exits). */
async function waitForReady(inst: InstanceProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void inst.exited.then(() => (exited = true));
  let last = "";
  while (Date.now() < deadline && !exited) {
    try {
      const res = await fetch(`${inst.url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      const body = (await res.json().catch(() => ({}))) as { instance?: unknown };
      // Its own answer, not another process's on the same port.
      if (res.status === 200 && body.instance === inst.id) return;
      last = `status ${res.status}, instance ${JSON.stringify(body.instance)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await delay(50);
  }
  if (exited) await delay(100); // its last words may still be in the pipe
  const output = [...inst.logs.slice(-5).map((r) => JSON.stringify(r)), ...inst.otherOutput.slice(-10)].join("\n");
  throw new Error(`${exited ? `exited (${JSON.stringify(await inst.exited)})` : `/readyz did not answer 200 within ${timeoutMs} ms (${last})`}; last output:\n${output}`);
}

interface NginxProcess {
  readonly pid: number;
  stop(): Promise<void>;
}

/** `nginx -t`, then nginx in the foreground; resolves once it accepts TCP connections on `port`. */
async function startNginx(o: { confPath: string; tmpDir: string; port: number; onExit: (exit: Exit, expected: boolean) => void }): Promise<NginxProcess> {
  const errorLog = path.join(o.tmpDir, "error.log");
  const args = ["-c", o.confPath, "-e", errorLog];
  const globals = `pid ${path.join(o.tmpDir, "nginx.pid")};`;
  try {
    await run("nginx", [...args, "-t", "-q", "-g", globals], { timeout: 15_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`nginx -t rejected the rendered ${o.confPath}: ${(e.stderr || e.message).trim()}`);
  }

  // nginx retries a taken port for seconds before it gives up: say so at once.
  if (!(await isFree(o.port))) throw new Error(`nginx: 127.0.0.1:${o.port} is already in use`);

  let expected = false;
  const child = spawnChild("nginx", [...args, "-g", `daemon off; ${globals}`], {});
  const pid = child.proc.pid ?? -1;
  // If this process dies, child.ts SIGKILLs the master; its workers would stay. Take them too.
  const reapWorkers = (): void => {
    for (const worker of childPids(pid)) tryKill(worker, "SIGKILL");
  };
  process.prependListener("exit", reapWorkers);
  void child.exited.then((exit) => {
    process.removeListener("exit", reapWorkers);
    o.onExit(exit, expected);
  });

  const stop = async (): Promise<void> => {
    expected = true;
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
    const workers = childPids(pid);
    child.proc.kill("SIGTERM"); // fast shutdown: the instances are gone already
    const timer = setTimeout(() => {
      for (const w of childPids(pid)) tryKill(w, "SIGKILL");
      child.proc.kill("SIGKILL");
    }, 5_000);
    await child.exited;
    clearTimeout(timer);
    // Workers of a master that was SIGKILLed are orphans now: make sure they are gone.
    for (const w of workers) if (isNginxWorker(w)) tryKill(w, "SIGKILL");
  };

  try {
    await waitForPort(pid, o.port, child.exited, 10_000);
  } catch (err) {
    await stop();
    const log = await readFile(errorLog, "utf8").catch(() => "");
    throw new Error(`${(err as Error).message}\n${[...child.output.slice(-10), ...log.trim().split("\n").slice(-10)].join("\n")}`);
  }
  return { pid, stop };
}

/**
 * Until `pid` itself listens on `port` (another process on that port must not
 * pass for nginx) and the port accepts a connection.
 */
async function waitForPort(pid: number, port: number, exited: Promise<Exit>, timeoutMs: number): Promise<void> {
  let exit: Exit | undefined;
  void exited.then((e) => (exit = e));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exit) throw new Error(`nginx exited while starting (${JSON.stringify(exit)})`);
    if (listensOn(pid, port) !== false && (await canConnect(port))) return;
    await delay(50);
  }
  throw new Error(`nginx did not accept connections on 127.0.0.1:${port} within ${timeoutMs} ms`);
}




/**
 * The hard RLIMIT_NOFILE of this process when nginx could not raise its
 * workers past it (no CAP_SYS_RESOURCE, as in most containers and for
 * non-root users); undefined when it could, or when there is no limit.
 */
async function hardNofileLimit(): Promise<number | undefined> {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const capEff = /^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1];
    const CAP_SYS_RESOURCE = 24n;
    if (capEff !== undefined && (BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) return undefined;
  } catch {
    // no /proc: assume the limit applies
  }
  try {
    const { stdout } = await run("sh", ["-c", "ulimit -Hn"]);
    const n = Number(stdout.trim());
    return Number.isInteger(n) && n > 0 ? n : undefined; // "unlimited" -> leave the file alone
  } catch {
    return undefined;
  }
}

/** Live children of `ppid`, from /proc (synchronous: also used in an exit handler). */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // pid (comm) state ppid ...; comm may contain spaces and parentheses.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === ppid && fields[0] !== "Z") out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function isNginxWorker(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("nginx: worker");
  } catch {
    return false;
  }
}

function tryKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
