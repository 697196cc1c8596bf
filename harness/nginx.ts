import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { canConnect, isFree } from "./ports.js";
import { type Exit, isRunning, killTree, spawnChild, tryKill } from "./processes.js";
import { childPids, commandLine, hasCapability, listensOn, nofileLimit } from "./procfs.js";
import { settleWithin } from "./timeouts.js";
import { poll } from "./waiting.js";

/**
 * nginx for a loopback run of the shipped nginx.conf: the file rendered for
 * local ports and a temp directory, and nginx itself in the foreground.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The nginx.conf that docker compose mounts: the stack runs this very file. */
export const NGINX_CONF = path.join(ROOT, "nginx.conf");
/** nginx.conf's upstream servers, ws1..ws4 (as in docker-compose.yml): the stack runs one instance for each. */
export const INSTANCE_COUNT = 4;

const run = promisify(execFile);

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
 * `listen 127.0.0.1:<basePort>` (its parameters kept), and nginx's temp paths
 * move into `tmpDir` (the packaged defaults under /var/lib/nginx are not ours
 * to write). `maxNofile` lowers worker_rlimit_nofile to what this process may
 * have, and with it worker_connections and worker_processes (see
 * workersUnderCap): nginx as a whole keeps the connections nginx.conf sizes it
 * for. `cpus` is what `worker_processes auto` means (default: this machine's).
 * `limits` replaces the numbers of the per-address limit directives (see
 * NginxLimits). Nothing else changes. Throws if the source no longer has the
 * expected shape, or lacks a directive that `limits` asks to change.
 */
export function renderNginxConf(
  source: string,
  basePort: number,
  tmpDir: string,
  opts: { maxNofile?: number; limits?: NginxLimits; cpus?: number } = {},
): string {
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + INSTANCE_COUNT > 65535) throw new Error(`bad basePort ${basePort}`);
  // Strip comments for matching only, so a comment cannot satisfy (or break) a check.
  const code = source.replace(/#[^\n]*/g, "");
  const upstreamRe = /\bserver\s+ws(\d+):8000\b/g;
  const seen = new Set([...code.matchAll(upstreamRe)].map((m) => Number(m[1])));
  const expected = Array.from({ length: INSTANCE_COUNT }, (_, i) => i + 1);
  if (seen.size !== INSTANCE_COUNT || !expected.every((n) => seen.has(n))) {
    throw new Error(`nginx.conf: expected upstream servers ws1:8000..ws${INSTANCE_COUNT}:8000, found ${[...seen].map((n) => `ws${n}`).join(", ") || "none"}`);
  }
  if ((code.match(/\blisten\s+8080\b[^;]*;/g) ?? []).length !== 1) throw new Error("nginx.conf: expected exactly one `listen 8080 ...;`");
  const capped = opts.maxNofile === undefined ? undefined : workersUnderCap(code, opts.maxNofile, opts.cpus ?? os.availableParallelism());
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
  const tempPaths = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((kind) => `    ${kind}_temp_path ${tmp}/${kind}_temp;`).join("\n");

  let out = "";
  let placed = false;
  // Substitute line by line, leaving comment text untouched.
  for (const line of source.split("\n")) {
    const hash = line.indexOf("#");
    let codePart = hash === -1 ? line : line.slice(0, hash);
    const comment = hash === -1 ? "" : line.slice(hash);
    codePart = codePart
      .replace(/\bserver(\s+)ws(\d+):8000\b/g, (_m, sp: string, n: string) => `server${sp}127.0.0.1:${basePort + Number(n)}`)
      .replace(/\blisten(\s+)8080\b/, (_m, sp: string) => `listen${sp}127.0.0.1:${basePort}`);
    for (const d of limitDirectives) {
      const n = limits[d.field];
      if (n !== undefined) codePart = codePart.replace(d.re, (...m: string[]) => d.put(m, n));
    }
    let note = "";
    if (capped) {
      const set = (name: string, value: number) => (_m: string, sp: string, _n: string, sp2: string) => `${name}${sp}${value}${sp2};`;
      codePart = codePart
        .replace(/\bworker_rlimit_nofile(\s+)(\d+)(\s*);/, set("worker_rlimit_nofile", capped.nofile))
        .replace(/\bworker_connections(\s+)(\d+)(\s*);/, set("worker_connections", capped.connections));
      if (/\bworker_processes\s+\w+\s*;/.test(codePart)) {
        codePart = codePart.replace(/\bworker_processes(\s+)(\w+)(\s*);/, set("worker_processes", capped.workers));
        note = `# Loopback run (harness/nginx.ts): ${capped.why}\n`;
      }
    }
    let rendered = note + codePart + comment;
    if (!placed && /^\s*http\s*\{\s*$/.test(codePart)) {
      placed = true;
      rendered += `\n    # Loopback run (harness/nginx.ts): temp files in the stack's own directory.\n${tempPaths}`;
    }
    out += (out === "" ? "" : "\n") + rendered;
  }
  if (!placed) throw new Error("nginx.conf: could not place the temp paths (expected a line `http {`)");
  return out;
}

/**
 * nginx.conf's worker sizing under a descriptor cap. A worker holds at most
 * min(worker_connections, worker_rlimit_nofile) connections; when `cap` (the
 * hard RLIMIT_NOFILE nginx cannot raise) is below worker_rlimit_nofile, each
 * holds fewer, so more workers make up the difference: as many as it takes
 * for workers × per-worker connections to stay what nginx.conf sizes for
 * (at most four times as many as shipped). Undefined when the cap changes
 * nothing. `auto` workers means `cpus`.
 */
export function workersUnderCap(code: string, cap: number, cpus: number): { workers: number; connections: number; nofile: number; why: string } | undefined {
  const directive = (name: string) => new RegExp(`\\b${name}\\s+(\\w+)\\s*;`).exec(code)?.[1];
  const nofile = Number(directive("worker_rlimit_nofile"));
  if (!Number.isFinite(nofile) || nofile <= cap) return undefined;
  const shippedWorkers = directive("worker_processes") ?? "1";
  const workers = shippedWorkers === "auto" ? Math.max(1, cpus) : Number(shippedWorkers);
  const connections = Number(directive("worker_connections") ?? 512);
  if (!Number.isInteger(workers) || workers < 1 || !Number.isInteger(connections))
    throw new Error("nginx.conf: unreadable worker_processes or worker_connections");
  const perWorker = Math.min(connections, cap);
  const needed = Math.min(workers * 4, Math.ceil((workers * Math.min(connections, nofile)) / perWorker));
  const more = Math.max(workers, needed);
  return {
    workers: more,
    connections: perWorker,
    nofile: cap,
    why:
      `the hard descriptor limit (${cap}) caps worker_rlimit_nofile (${nofile}), so a worker holds ${perWorker} connections, not ` +
      `${Math.min(connections, nofile)}: ${more} workers instead of ${shippedWorkers} (${workers}) keep ${workers} × ${Math.min(connections, nofile)} = ` +
      `${workers * Math.min(connections, nofile)} connections (${more * perWorker}).`,
  };
}

export interface NginxProcess {
  /** The master process. */
  readonly pid: number;
  /** Its error.log (in the run's temp directory). */
  readonly errorLog: string;
  /** SIGTERM (fast shutdown), SIGKILL to master and workers after 5 s. */
  stop(): Promise<void>;
}

/**
 * `nginx -t`, then nginx in the foreground with `confPath`; resolves once it
 * accepts TCP connections on `port` itself. `onExit` hears of its exit,
 * `expected` false unless stop() asked for it.
 */
export async function startNginx(o: {
  confPath: string;
  tmpDir: string;
  port: number;
  onExit: (exit: Exit, expected: boolean) => void;
}): Promise<NginxProcess> {
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
  const child = spawnChild("nginx", [...args, "-g", `daemon off; ${globals}`], { name: "nginx" });
  const pid = child.pid;
  // If this process dies, processes.ts SIGKILLs the master; its workers would stay. Take them first.
  const reap = (): void => killTree(pid, "SIGKILL");
  process.prependListener("exit", reap);
  void child.exited.then((exit) => {
    process.removeListener("exit", reap);
    o.onExit(exit, expected);
  });

  const stop = async (): Promise<void> => {
    expected = true;
    if (!isRunning(child.proc)) return;
    const workers = childPids(pid);
    child.proc.kill("SIGTERM"); // fast shutdown: the instances are gone already
    if ((await settleWithin(child.exited, 5_000)) === undefined) killTree(pid, "SIGKILL");
    await child.exited;
    // Workers of a master that was SIGKILLed are orphans now: make sure they are gone.
    for (const w of workers) if (commandLine(w)?.startsWith("nginx: worker")) tryKill(w, "SIGKILL");
  };

  try {
    // Until nginx itself listens on the port (another process there must not pass for it) and accepts.
    await poll(async () => listensOn(pid, o.port) !== false && (await canConnect(o.port)), {
      timeoutMs: 10_000,
      what: `nginx to accept connections on 127.0.0.1:${o.port}`,
      giveUp: () => (isRunning(child.proc) ? undefined : "it exited"),
    });
  } catch (err) {
    await stop();
    await child.ended;
    const log = await readFile(errorLog, "utf8").catch(() => "");
    throw new Error(`${(err as Error).message}\n${[...child.output.items.slice(-10), ...log.trim().split("\n").slice(-10)].join("\n")}`);
  }
  return { pid, errorLog, stop };
}

/**
 * The hard RLIMIT_NOFILE of this process when nginx could not raise its
 * workers past it (no CAP_SYS_RESOURCE, as in most containers and for
 * non-root users); undefined when it could, or when there is no limit.
 */
export function workerNofileCap(): number | undefined {
  const CAP_SYS_RESOURCE = 24;
  if (hasCapability(CAP_SYS_RESOURCE)) return undefined;
  const hard = nofileLimit()?.hard;
  return hard !== undefined && Number.isFinite(hard) ? hard : undefined;
}
