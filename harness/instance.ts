import { fileURLToPath } from "node:url";
import { awaitExit, type Exit, isRunning, spawnChild, stopChild } from "./processes.js";
import { Arrivals, poll } from "./waiting.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * How long an instance may take from spawn to listening. Generous: several
 * instances compiling TypeScript at once on a busy machine are slow.
 */
export const START_TIMEOUT_MS = 60_000;

/** One JSON log record of an instance. */
export type LogRecord = { level: string; msg: string; instance: string; [k: string]: unknown };

export interface InstanceProcess {
  readonly id: string;
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  /** Its log records so far (a live array). */
  readonly logs: LogRecord[];
  /** Lines that were not JSON (stderr, crashes, the inspector's banner). */
  readonly otherOutput: string[];
  readonly exited: Promise<Exit>;
  /** Resolves after `exited` once its last output is in `logs` and `otherOutput`. */
  readonly ended: Promise<Exit>;
  /** Resolves with the first record (already logged or still to come) that matches; fails if it exits first. @default timeoutMs 10_000 */
  waitForLog(match: (r: LogRecord) => boolean, timeoutMs?: number): Promise<LogRecord>;
  /** Calls `listener` with every record logged from now on; returns what stops it. */
  onLog(listener: (r: LogRecord) => void): () => void;
  signal(name: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<Exit>;
  /** Waits for its exit (sends nothing); SIGKILL if it has not gone within `graceMs`. */
  awaitExit(graceMs: number): Promise<Exit>;
  /** Its last records and other lines, for error messages. */
  lastOutput(n?: number): string;
}

/**
 * Starts `server/main.ts` as a real process with `env` on top of ours, and
 * resolves once it is listening (its "listening" line, or /healthz answering
 * when LOG_LEVEL hides that line). PORT must be a real port (not 0) so the
 * caller knows where it is.
 */
export async function startInstance(opts: {
  env: Record<string, string | undefined>;
  waitForListening?: boolean;
  /** "source" (default): server/main.ts through tsx; "dist": the compiled build (`npm run build` first). */
  build?: "source" | "dist";
}): Promise<InstanceProcess> {
  // JSON lines always: they are parsed here (the stack prettifies them itself).
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: "info", ...opts.env, LOG_FORMAT: "json" };
  const port = Number(env.PORT);
  const host = env.HOST ?? "127.0.0.1";
  const id = env.INSTANCE_ID ?? `?:${port}`;
  const otherOutput: string[] = [];
  const lastOutput = (n = 10): string => [...logs.items.slice(-5).map((r) => JSON.stringify(r)), ...otherOutput.slice(-n)].join("\n");
  const logs: Arrivals<LogRecord> = new Arrivals<LogRecord>(() => `\n${lastOutput(5)}`);
  const args = opts.build === "dist" ? ["dist/server/main.js"] : ["--import", "tsx", "server/main.ts"];
  const child = spawnChild(process.execPath, args, {
    cwd: ROOT,
    env,
    name: `instance ${id}`,
    onLine(line) {
      let record: LogRecord;
      try {
        record = JSON.parse(line) as LogRecord;
      } catch {
        otherOutput.push(line);
        return;
      }
      logs.push(record);
    },
  });
  void child.ended.then((exit) =>
    logs.close(new Error(`instance ${id} exited (${JSON.stringify(exit)}) before logging the expected line; output:\n${lastOutput()}`)),
  );

  const instance: InstanceProcess = {
    id,
    port,
    url: `http://${host}:${port}`,
    pid: child.pid,
    logs: logs.items,
    otherOutput,
    exited: child.exited,
    ended: child.ended,
    waitForLog: (match, timeoutMs = 10_000) => logs.find(match, timeoutMs, "a matching log line"),
    onLog: (listener) => logs.subscribe(listener),
    signal: (name) => void child.proc.kill(name),
    stop: (graceMs) => stopChild(child.proc, child.exited, graceMs),
    awaitExit: (graceMs) => awaitExit(child.proc, child.exited, graceMs),
    lastOutput,
  };
  if (opts.waitForListening !== false) {
    const healthy = () =>
      fetch(`${instance.url}/healthz`, { signal: AbortSignal.timeout(500) }).then(
        (r) => r.ok,
        () => false,
      );
    try {
      await poll(async () => logs.items.some((r) => r.msg === "listening") || (await healthy()), {
        timeoutMs: START_TIMEOUT_MS,
        what: `instance ${id} to listen on ${instance.url}`,
        giveUp: () => (isRunning(child.proc) ? undefined : "it exited"),
      });
    } catch (err) {
      await instance.stop(500);
      await child.ended;
      throw new Error(`${(err as Error).message}; last output:\n${lastOutput()}`, { cause: err });
    }
  }
  return instance;
}
