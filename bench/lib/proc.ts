import { readFileSync, readdirSync } from "node:fs";
import os from "node:os";
import { execFileSync } from "node:child_process";

/** Clock ticks a second for /proc/<pid>/stat times (USER_HZ; 100 on Linux almost always). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process, seconds; undefined once it has gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // pid (comm) state ppid ... : comm may hold spaces, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of stat(5) are utime and stime; index 0 here is field 3.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** VmRSS of a process, bytes. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The soft RLIMIT_NOFILE of this process (what it may open). */
export function fdLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m) return m[1] === "unlimited" ? 1_000_000 : Number(m[1]);
  } catch {
    // not Linux
  }
  return 1024;
}

/** Open file descriptors of this process. */
export function openFds(): number {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return 0;
  }
}

/** Live children of `ppid`, and the processes listening on a port, from /proc (the stack's helpers). */
export { childPids } from "../../scripts/lib/stack.js";
export { pidsListeningOn } from "../../scripts/lib/listeners.js";

/** 1-minute load average and the number of cores. */
export function machineLoad(): { load1: number; load5: number; cores: number; busy: boolean } {
  const [load1 = 0, load5 = 0] = os.loadavg();
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  return { load1, load5, cores, busy: load1 > cores * 0.5 };
}

/** CPU seconds of a set of named processes, read before and after a phase. */
export class CpuMeter {
  #start = new Map<string, number>();
  #t0 = 0;

  constructor(private readonly groups: () => Record<string, number[]>) {}

  start(): void {
    this.#t0 = performance.now();
    this.#start.clear();
    for (const [name, pids] of Object.entries(this.groups())) this.#start.set(name, sum(pids));
  }

  /** Percent of one core each group used since start(). */
  stop(): Record<string, number> {
    const elapsed = (performance.now() - this.#t0) / 1000;
    const out: Record<string, number> = {};
    for (const [name, pids] of Object.entries(this.groups())) {
      const before = this.#start.get(name);
      if (before === undefined) continue;
      out[name] = elapsed > 0 ? Math.round(((sum(pids) - before) / elapsed) * 1000) / 10 : 0;
    }
    return out;
  }
}

const sum = (pids: number[]): number => pids.reduce((s, pid) => s + (cpuSeconds(pid) ?? 0), 0);
