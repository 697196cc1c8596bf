import { type ChildProcess, spawn } from "node:child_process";

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const running = new Set<ChildProcess>();
// Whatever happens to the parent, its children go with it.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Spawns a long-running child with its output collected line by line, and a
 * promise of its exit. Every child is killed when the parent exits.
 */
export function spawnChild(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; onLine?: (line: string, stream: "stdout" | "stderr") => void },
): { proc: ChildProcess; exited: Promise<Exit>; output: string[] } {
  const proc = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
  running.add(proc);
  const output: string[] = [];
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
    proc.once("exit", (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    });
    proc.once("error", () => {
      running.delete(proc);
      resolve({ code: null, signal: null });
    });
  });
  return { proc, exited, output };
}

/** SIGTERM, then SIGKILL if it has not gone after `graceMs`. */
export async function stopChild(proc: ChildProcess, exited: Promise<Exit>, graceMs = 3_000): Promise<Exit> {
  if (proc.exitCode !== null || proc.signalCode !== null) return exited;
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
  const result = await exited;
  clearTimeout(timer);
  return result;
}
