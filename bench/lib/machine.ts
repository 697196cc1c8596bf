import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";

/**
 * How busy the machine was during a measurement. The 1-minute load average
 * counts this run's own processes too (servers, generator, publisher keep a
 * 2-core machine at 2 or more), so beside it the CPU that processes outside
 * this run used: the whole machine's busy time (/proc/stat) less that of this
 * process and every descendant (/proc/<pid>/stat, reaped children included).
 */
export interface MachineReading {
  /** 1-minute load average at the start and at the end. */
  load1: [number, number];
  /** CPU of everything outside this run, percent of one core (NaN when /proc cannot tell). */
  othersCpu: number;
  seconds: number;
}

/** Ticks a second of /proc's CPU times (USER_HZ: 100 on Linux). */
const HZ = 100;

const read = (file: string): string | undefined => {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
};

/** Busy ticks of the whole machine (all but idle and iowait). */
function machineBusy(): number | undefined {
  const cpu = read("/proc/stat")?.split("\n")[0];
  if (!cpu?.startsWith("cpu ")) return undefined;
  const t = cpu.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest is inside user)
  return t.slice(0, 8).reduce((a, b) => a + b, 0) - (t[3] ?? 0) - (t[4] ?? 0);
}

/** Ticks of this process and its descendants, with the children they reaped. */
function ourBusy(): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  let pids: string[] = [];
  try {
    pids = readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    return 0;
  }
  for (const p of pids) {
    const stat = read(`/proc/${p}/stat`);
    if (!stat) continue;
    // Fields from 3 (state) on; comm may hold spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    parent.set(Number(p), Number(f[1]));
    ticks.set(Number(p), Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
  }
  const ours = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) if (p === process.pid) return true;
    return false;
  };
  let sum = 0;
  for (const [pid, t] of ticks) if (ours(pid)) sum += t;
  return sum;
}

/** Reads the machine before and after a measurement. */
export class MachineMeter {
  #t0 = 0;
  #load0 = 0;
  #busy0: number | undefined;
  #ours0 = 0;

  start(): this {
    this.#t0 = performance.now();
    this.#load0 = os.loadavg()[0]!;
    this.#busy0 = machineBusy();
    this.#ours0 = ourBusy();
    return this;
  }

  stop(): MachineReading {
    const seconds = (performance.now() - this.#t0) / 1000;
    const busy = machineBusy();
    const others = busy === undefined || this.#busy0 === undefined ? NaN : busy - this.#busy0 - (ourBusy() - this.#ours0);
    return {
      load1: [round(this.#load0), round(os.loadavg()[0]!)],
      othersCpu: seconds > 0 ? round(Math.max(0, others / HZ / seconds) * 100, 0) : NaN,
      seconds: round(seconds),
    };
  }
}

const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d;

/** Several readings as one: the load's lowest and highest, others' CPU weighted by time. */
export function mergeReadings(rs: (MachineReading | undefined)[]): MachineReading | undefined {
  const xs = rs.filter((r): r is MachineReading => r !== undefined);
  if (xs.length === 0) return undefined;
  const loads = xs.flatMap((r) => r.load1);
  const seconds = xs.reduce((n, r) => n + r.seconds, 0);
  const timed = xs.filter((r) => Number.isFinite(r.othersCpu));
  const othersSec = timed.reduce((n, r) => n + r.othersCpu * r.seconds, 0);
  const timedSec = timed.reduce((n, r) => n + r.seconds, 0);
  return {
    load1: [Math.min(...loads), Math.max(...loads)],
    othersCpu: timedSec > 0 ? Math.round(othersSec / timedSec) : NaN,
    seconds: round(seconds),
  };
}

/** "load 2.1–2.6, others 4% of a core" */
export function readingText(r: MachineReading | undefined): string {
  if (!r) return "–";
  const [a, b] = r.load1;
  const load = a === b ? a.toFixed(2) : `${a.toFixed(2)}–${b.toFixed(2)}`;
  return `${load}; others ${Number.isFinite(r.othersCpu) ? `${r.othersCpu}%` : "?"}`;
}
