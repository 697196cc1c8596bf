import os from "node:os";
import { machineBusySeconds, treeCpuSeconds } from "../../harness/procfs.js";
import { round } from "./format.js";

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

/** Reads the machine before and after a measurement. */
export class MachineMeter {
  #t0 = 0;
  #load0 = 0;
  #busy0: number | undefined;
  #ours0 = 0;

  start(): this {
    this.#t0 = performance.now();
    this.#load0 = os.loadavg()[0]!;
    this.#busy0 = machineBusySeconds();
    this.#ours0 = treeCpuSeconds();
    return this;
  }

  stop(): MachineReading {
    const seconds = (performance.now() - this.#t0) / 1000;
    const busy = machineBusySeconds();
    const others = busy === undefined || this.#busy0 === undefined ? NaN : busy - this.#busy0 - (treeCpuSeconds() - this.#ours0);
    return {
      load1: [round(this.#load0), round(os.loadavg()[0]!)],
      othersCpu: seconds > 0 ? round(Math.max(0, others / seconds) * 100, 0) : NaN,
      seconds: round(seconds),
    };
  }
}

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
