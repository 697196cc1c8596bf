import type { ChildProcess } from "node:child_process";

/**
 * Everything a run starts, so that nothing outlives it: on a normal end, on an
 * error, on Ctrl+C (SIGINT) and SIGTERM. Stoppers run newest first and each is
 * bounded in time; whatever is still alive after them is SIGKILLed on exit
 * (scripts/lib/child.ts does the same for the instances, Redis and nginx).
 */
const forked = new Set<ChildProcess>();
const stoppers = new Map<number, { name: string; stop: () => Promise<unknown> }>();
let nextKey = 1;

process.once("exit", () => {
  for (const child of forked) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

/** A forked child to SIGKILL if it is still running when we exit. */
export function track(child: ChildProcess): void {
  forked.add(child);
  child.once("exit", () => forked.delete(child));
}

/** Registers an async stop; call the returned function once it has been stopped the normal way. */
export function onCleanup(name: string, stop: () => Promise<unknown>): () => void {
  const key = nextKey++;
  stoppers.set(key, { name, stop });
  return () => void stoppers.delete(key);
}

/** Runs every registered stop, newest first, each within `timeoutMs`. */
export async function cleanupAll(timeoutMs = 25_000): Promise<void> {
  const all = [...stoppers.entries()].reverse();
  stoppers.clear();
  for (const [, { name, stop }] of all) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      stop().catch((err: unknown) => process.stderr.write(`bench: stopping ${name}: ${(err as Error).message}\n`)),
      new Promise((r) => (timer = setTimeout(r, timeoutMs))),
    ]);
    clearTimeout(timer);
  }
  for (const child of forked) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

let interrupted = false;
/** True once SIGINT/SIGTERM arrived: loops check it to stop early. */
export const isInterrupted = (): boolean => interrupted;

/**
 * First SIGINT/SIGTERM: stop everything in order, then exit 130. A second one:
 * exit at once (the exit handlers still SIGKILL every child).
 */
export function installSignalHandlers(onInterrupt: () => void): void {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      if (interrupted) {
        process.stderr.write("\nbench: second signal, killing everything now\n");
        process.exit(130);
      }
      interrupted = true;
      process.stderr.write(`\nbench: ${sig}: stopping every process we started…\n`);
      onInterrupt();
      void cleanupAll(10_000).finally(() => process.exit(130));
    });
  }
}
