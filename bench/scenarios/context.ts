import type { Fleet } from "../generator/fleet.js";
import type { Progress } from "../lib/progress.js";
import type { Options } from "../options.js";

/** What every scenario gets. */
export interface Ctx {
  readonly opts: Options;
  readonly fleet: Fleet;
  readonly progress: Progress;
  /** Broadcast sequence numbers are unique for the whole run. */
  nextSeq(): number;
  /** Where results go (bench/results). */
  readonly out: string;
}

/** Stops a loop early on Ctrl+C. */
export class Interrupted extends Error {
  constructor() {
    super("interrupted");
    this.name = "Interrupted";
  }
}
