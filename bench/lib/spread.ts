import { f } from "./format.js";

/** The trials of a figure: how many, and their lowest, median and highest value. */
export interface Spread {
  n: number;
  min: number;
  median: number;
  max: number;
}

/**
 * Trials that disagree by more than this (highest ÷ lowest − 1) make a
 * figure noisy: it is then neither met nor not met.
 */
export const NOISY_ABOVE = 0.2;

export const medianOf = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** The spread of the finite values of `xs`; undefined when there are none. */
export function spreadOf(xs: number[]): Spread | undefined {
  const v = xs.filter(Number.isFinite);
  if (v.length === 0) return undefined;
  return { n: v.length, min: Math.min(...v), median: medianOf(v), max: Math.max(...v) };
}

/** Whether the trials disagree by more than NOISY_ABOVE (positive figures). */
export const isNoisy = (s: Spread): boolean => s.n > 1 && s.min > 0 && s.max / s.min - 1 > NOISY_ABOVE;

export type Status = "met" | "not met" | "noisy" | "";

/**
 * met / not met on the median; noisy when the trials disagree by more than
 * 20%, with what the trials say (every one meets the goal, none does, or
 * some do). "" when there is no goal.
 */
export function judge(s: Spread | undefined, meets: ((v: number) => boolean) | undefined): { status: Status; note: string } {
  if (!s || !meets) return { status: "", note: "" };
  if (isNoisy(s)) {
    const [lo, hi] = [meets(s.min), meets(s.max)];
    return { status: "noisy", note: lo && hi ? "every trial meets the goal" : !lo && !hi ? "no trial meets the goal" : "trials on both sides of the goal" };
  }
  return { status: meets(s.median) ? "met" : "not met", note: "" };
}

/** "0.98 / 1.05 / 1.10 (3)": lowest / median / highest of n trials; a single measurement says so. */
export function spreadText(s: Spread | undefined, digits = 2): string {
  if (!s) return "–";
  if (s.n === 1) return `${f(s.median, digits)} (one measurement)`;
  return `${f(s.min, digits)} / ${f(s.median, digits)} / ${f(s.max, digits)} (${s.n})`;
}

/** "1.05 (0.98–1.10)": the median and the range, for table cells. */
export function shortSpread(s: Spread | undefined, digits = 2): string {
  if (!s) return "–";
  return s.n === 1 || s.min === s.max ? f(s.median, digits) : `${f(s.median, digits)} (${f(s.min, digits)}–${f(s.max, digits)})`;
}
