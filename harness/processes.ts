import { type ChildProcess, spawn } from "node:child_process";
import { childPids } from "./procfs.js";
import { settleWithin } from "./timeouts.js";
import { Arrivals } from "./waiting.js";

/**
 * Child processes, and making sure none outlives us: every child started here
 * (or handed to `track`) is SIGKILLed when this process exits, whatever the
 * reason; stoppers registered with `onCleanup` run, each bounded in time, at
 * the end of a run, on an error or on Ctrl+C.
 */

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) if (isRunning(child)) child.kill("SIGKILL");
});

/** A child to SIGKILL if it is still running when this process exits. */
export function track(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
}

export interface Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<Exit>;
  /** Resolves after `exited` once its last output is in (its pipes closed, or 100 ms later). */
  readonly ended: Promise<Exit>;
  /**
   * Its stdout and stderr lines as they come. Waits on them fail once it has
   * exited (with its exit and last lines), or at their deadline.
   */
  readonly output: Arrivals<string>;
}

/** The last `n` lines, one a line, for error messages. */
const tail = (lines: readonly string[], n = 10): string => lines.slice(-n).join("\n");

/**
 * Spawns a long-running child with its output collected line by line.
 * @param opts.name what errors call it. @default cmd
 * @param opts.stdin "pipe" to write to it (`proc.stdin`). @default "ignore"
 */
export function spawnChild(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; name?: string; stdin?: "ignore" | "pipe"; onLine?: (line: string, stream: "stdout" | "stderr") => void } = {},
): Child {
  const proc = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: [opts.stdin ?? "ignore", "pipe", "pipe"] });
  track(proc);
  const output = new Arrivals<string>((lines) => `\n${tail(lines)}`);
  for (const stream of ["stdout", "stderr"] as const) {
    let rest = "";
    proc[stream]!.setEncoding("utf8");
    proc[stream]!.on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        output.push(line);
        opts.onLine?.(line, stream);
      }
    });
  }
  const exited = new Promise<Exit>((resolve) => {
    proc.once("exit", (code, signal) => resolve({ code, signal }));
    proc.once("error", () => resolve({ code: null, signal: null }));
  });
  const closed = new Promise((resolve) => proc.once("close", resolve));
  const ended = exited.then(async (exit) => {
    // Its last words may still be in the pipes (a process that keeps them open must not hold us up).
    await settleWithin(closed, 100);
    output.close(new Error(`${opts.name ?? cmd} exited (${JSON.stringify(exit)}); last output:\n${tail(output.items)}`));
    return exit;
  });
  return { proc, pid: proc.pid ?? -1, exited, ended, output };
}

/** Neither exited nor ended by a signal yet. */
export const isRunning = (proc: ChildProcess): boolean => proc.exitCode === null && proc.signalCode === null;

/** Waits for its exit; SIGKILL if it has not gone within `graceMs`. */
export async function awaitExit(proc: ChildProcess, exited: Promise<Exit>, graceMs: number): Promise<Exit> {
  const exit = await settleWithin(exited, graceMs);
  if (exit) return exit;
  proc.kill("SIGKILL");
  return exited;
}

/** SIGTERM, then SIGKILL if it has not gone after `graceMs`. */
export async function stopChild(proc: ChildProcess, exited: Promise<Exit>, graceMs = 3_000): Promise<Exit> {
  if (!isRunning(proc)) return exited;
  proc.kill("SIGTERM");
  return awaitExit(proc, exited, graceMs);
}

/** Sends `signal` to `pid` if it still exists. */
export function tryKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Sends `signal` to the live children of `pid` (from /proc), then to `pid`: a master and its workers. */
export function killTree(pid: number, signal: NodeJS.Signals): void {
  for (const child of childPids(pid)) tryKill(child, signal);
  tryKill(pid, signal);
}

// --- cleanup at the end of a run -------------------------------------------------

const stoppers = new Map<number, { name: string; stop: () => Promise<unknown> }>();
let nextKey = 1;

/** Registers an async stop for `cleanupAll`; call the returned function once it has been stopped the normal way. */
export function onCleanup(name: string, stop: () => Promise<unknown>): () => void {
  const key = nextKey++;
  stoppers.set(key, { name, stop });
  return () => void stoppers.delete(key);
}

/** Runs every registered stop, newest first, each within `timeoutMs`, then SIGKILLs every child still running. */
export async function cleanupAll(timeoutMs = 25_000): Promise<void> {
  const all = [...stoppers.values()].reverse();
  stoppers.clear();
  for (const { name, stop } of all) {
    await settleWithin(
      stop().catch((err: unknown) => process.stderr.write(`stopping ${name}: ${(err as Error).message}\n`)),
      timeoutMs,
    );
  }
  for (const child of running) if (isRunning(child)) child.kill("SIGKILL");
}

let interrupted = false;
/** True once SIGINT/SIGTERM arrived (after `exitOnSignals`): loops check it to stop early. */
export const isInterrupted = (): boolean => interrupted;

/**
 * First SIGINT/SIGTERM: `onInterrupt`, then `cleanupAll`, then exit 130. A
 * second one: exit at once (the exit handler still SIGKILLs every child).
 * @param name what the messages on stderr call this program
 */
export function exitOnSignals(name: string, onInterrupt: () => void): void {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      if (interrupted) {
        process.stderr.write(`\n${name}: second signal, killing everything now\n`);
        process.exit(130);
      }
      interrupted = true;
      process.stderr.write(`\n${name}: ${sig}: stopping every process we started…\n`);
      onInterrupt();
      void cleanupAll(10_000).finally(() => process.exit(130));
    });
  }
}
