import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import os from "node:os";

/**
 * What Linux's /proc says about processes: who listens on a port, a
 * process's children and command line, CPU time, resident memory,
 * descriptor limits. Every reader answers undefined (or nothing) when /proc
 * cannot tell rather than throw: a process may go at any moment. Synchronous,
 * so exit handlers can use them.
 */

const read = (file: string): string | undefined => {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
};

/** Numeric entries of /proc: every process we may see. */
function allPids(): number[] {
  try {
    return readdirSync("/proc")
      .filter((name) => /^\d+$/.test(name))
      .map(Number);
  } catch {
    return [];
  }
}

/** stat(5) fields from field 3 (state) on; comm may hold spaces and parentheses, so split after the last ')'. */
function statFields(pid: number): string[] | undefined {
  const stat = read(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

// --- listeners -----------------------------------------------------------------

/** Inodes of the sockets listening on `port`, from /proc/net/tcp{,6}; undefined when neither is readable. */
function listeningInodes(port: number): Set<string> | undefined {
  const inodes = new Set<string>();
  let readable = false;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = read(table);
    if (text === undefined) continue;
    readable = true;
    for (const row of text.split("\n").slice(1)) {
      // sl local_address rem_address st ... inode: LISTEN is 0A
      const f = row.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== "0A") continue;
      const local = f[1]!;
      if (parseInt(local.slice(local.lastIndexOf(":") + 1), 16) === port) inodes.add(f[9]!);
    }
  }
  return readable ? inodes : undefined;
}

/** Whether `pid` holds one of `inodes`; throws when its fd table cannot be read. */
function holdsSocket(pid: number, inodes: Set<string>): boolean {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode && inodes.has(inode)) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

/** Whether `pid` itself listens on `port`; undefined when /proc cannot tell. */
export function listensOn(pid: number, port: number): boolean | undefined {
  const inodes = listeningInodes(port);
  if (!inodes) return undefined;
  try {
    return holdsSocket(pid, inodes);
  } catch {
    return undefined;
  }
}

/**
 * Every process listening on `port` (a Redis we did not spawn ourselves,
 * say). Walks every fd table: only call it before sockets pile up.
 */
export function pidsListeningOn(port: number): number[] {
  const inodes = listeningInodes(port);
  if (!inodes || inodes.size === 0) return [];
  return allPids().filter((pid) => {
    try {
      return holdsSocket(pid, inodes);
    } catch {
      return false; // gone, or not ours to read
    }
  });
}

// --- processes -----------------------------------------------------------------

/** Live (not zombie) children of `ppid`. */
export function childPids(ppid: number): number[] {
  return allPids().filter((pid) => {
    const f = statFields(pid);
    return f !== undefined && Number(f[1]) === ppid && f[0] !== "Z";
  });
}

/** The command line of `pid`, arguments separated by NUL (a process may rewrite it: nginx does). */
export const commandLine = (pid: number): string | undefined => read(`/proc/${pid}/cmdline`);

/** Whether this process has capability `bit` (capabilities(7)) in its effective set; undefined when /proc cannot tell. */
export function hasCapability(bit: number): boolean | undefined {
  const capEff = /^CapEff:\s*([0-9a-f]+)/m.exec(read("/proc/self/status") ?? "")?.[1];
  return capEff === undefined ? undefined : ((BigInt(`0x${capEff}`) >> BigInt(bit)) & 1n) === 1n;
}

// --- CPU and memory ------------------------------------------------------------

/** Clock ticks a second for /proc/<pid>/stat times (USER_HZ; 100 on Linux almost always). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process, seconds; undefined once it has gone. */
export function cpuSeconds(pid: number): number | undefined {
  const f = statFields(pid);
  // Fields 14 and 15 of stat(5) are utime and stime; index 0 here is field 3.
  return f === undefined ? undefined : (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Busy CPU seconds of the whole machine since boot (all but idle and iowait), from /proc/stat; undefined when unreadable. */
export function machineBusySeconds(): number | undefined {
  const cpu = read("/proc/stat")?.split("\n")[0];
  if (!cpu?.startsWith("cpu ")) return undefined;
  const t = cpu.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest is inside user)
  return (t.slice(0, 8).reduce((a, b) => a + b, 0) - (t[3] ?? 0) - (t[4] ?? 0)) / CLK_TCK;
}

/** CPU seconds of `root` and every process below it, with what they reaped (utime, stime, cutime, cstime). */
export function treeCpuSeconds(root: number = process.pid): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const pid of allPids()) {
    const f = statFields(pid);
    if (!f) continue;
    parent.set(pid, Number(f[1]));
    ticks.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
  }
  const below = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) if (p === root) return true;
    return false;
  };
  let sum = 0;
  for (const [pid, t] of ticks) if (below(pid)) sum += t;
  return sum / CLK_TCK;
}

/** CPU seconds of named groups of processes, read before and after a phase. */
export class CpuMeter {
  #start = new Map<string, number>();
  #t0 = 0;

  /** @param groups the processes by name, read at start() and stop() (a group's processes may change meanwhile) */
  constructor(private readonly groups: () => Record<string, number[]>) {}

  start(): void {
    this.#t0 = performance.now();
    this.#start.clear();
    for (const [name, pids] of Object.entries(this.groups())) this.#start.set(name, cpuOf(pids));
  }

  /** Percent of one core each group used since start(). */
  stop(): Record<string, number> {
    const elapsed = (performance.now() - this.#t0) / 1000;
    const out: Record<string, number> = {};
    for (const [name, pids] of Object.entries(this.groups())) {
      const before = this.#start.get(name);
      if (before === undefined) continue;
      out[name] = elapsed > 0 ? Math.round(((cpuOf(pids) - before) / elapsed) * 1000) / 10 : 0;
    }
    return out;
  }
}

const cpuOf = (pids: number[]): number => pids.reduce((s, pid) => s + (cpuSeconds(pid) ?? 0), 0);

/** VmRSS of a process, bytes; undefined once it has gone. */
export function rssBytes(pid: number): number | undefined {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(read(`/proc/${pid}/status`) ?? "");
  return m ? Number(m[1]) * 1024 : undefined;
}

/** 1- and 5-minute load averages, the cores, and whether the machine looks busy (load1 over half the cores). */
export function machineLoad(): { load1: number; load5: number; cores: number; busy: boolean } {
  const [load1 = 0, load5 = 0] = os.loadavg();
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  return { load1, load5, cores, busy: load1 > cores * 0.5 };
}

// --- descriptors ---------------------------------------------------------------

/** RLIMIT_NOFILE of a process (default: this one), soft and hard (Infinity: unlimited); undefined when /proc cannot tell. */
export function nofileLimit(pid: number | "self" = "self"): { soft: number; hard: number } | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(read(`/proc/${pid}/limits`) ?? "");
  if (!m) return undefined;
  const n = (v: string) => (v === "unlimited" ? Infinity : Number(v));
  return { soft: n(m[1]!), hard: n(m[2]!) };
}

/** Descriptors this process may open (its soft limit; 1,000,000 when unlimited, 1024 when /proc cannot tell). */
export function fdLimit(): number {
  const soft = nofileLimit()?.soft;
  return soft === undefined ? 1024 : Number.isFinite(soft) ? soft : 1_000_000;
}

/** Open file descriptors of a process (default: this one); 0 when /proc cannot tell. */
export function openFds(pid: number | "self" = "self"): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

// --- the kernel's TCP counters ---------------------------------------------------

/**
 * The kernel's TCP counters (/proc/net/snmp `Tcp:`, /proc/net/netstat
 * `TcpExt:`), as `Tcp.AttemptFails`, `TcpExt.ListenOverflows`, …, of this
 * network namespace: every process in it counts, not only ours.
 */
export function tcpCounters(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const file of ["/proc/net/snmp", "/proc/net/netstat"]) {
    const lines = (read(file) ?? "").split("\n");
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.trim().split(/\s+/);
      const values = lines[i + 1]!.trim().split(/\s+/);
      const prefix = names[0]?.replace(/:$/, "");
      if (prefix !== "Tcp" && prefix !== "TcpExt") continue;
      for (let k = 1; k < names.length; k++) out[`${prefix}.${names[k]}`] = Number(values[k]);
    }
  }
  return out;
}

/** Sockets by state from /proc/net/sockstat (`TCP: inuse … orphan … tw … alloc … mem …`; mem in pages). */
export function tcpSockstat(): Record<string, number> {
  const m = /^TCP:(.*)$/m.exec(read("/proc/net/sockstat") ?? "");
  const out: Record<string, number> = {};
  const f = m?.[1]?.trim().split(/\s+/) ?? [];
  for (let i = 0; i + 1 < f.length; i += 2) out[f[i]!] = Number(f[i + 1]);
  return out;
}
