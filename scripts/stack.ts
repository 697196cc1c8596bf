/**
 * `npm run stack`: Redis, ws1..ws4 and nginx (the shipped nginx.conf) on
 * loopback, the same topology as docker-compose.yml.
 *
 *   STACK_PORT   nginx port, instances on STACK_PORT+1..+4 (default 8080)
 *   REDIS_URL    use this Redis instead of starting redis-server
 *   STACK_REDIS_CLUSTER=1  start a Redis Cluster (3 masters, 3 replicas) instead of one redis-server
 *   REDIS_CLUSTER_NODES    use this Redis Cluster (seed node URLs, comma-separated)
 *   LOG_LEVEL, FORCED_SHUTDOWN_AFTER_SEC, PROGRESS_LOG_EVERY_SEC,
 *   PERIODIC_INTERVAL_SEC, MAX_MESSAGE_BYTES, MAX_BUFFERED_BYTES, CORS_ORIGINS, ADMIN_TOKEN
 *                passed to every instance
 *
 * Signals: SIGUSR2 rolling restart (drain ws1, start it again, then ws2...).
 * Ctrl+C / SIGTERM: drain every instance, then stop nginx and Redis. A second
 * Ctrl+C sends the instances a second SIGTERM (they close their clients at
 * once); a third kills everything.
 *
 * Why two processes: Ctrl+C signals the terminal's whole foreground process
 * group. nginx and redis-server would stop at once, cutting the clients the
 * instances are draining. So this process (the one the terminal sees) starts
 * a copy of itself in a new session, which owns the stack, and forwards
 * signals to it. A launcher may relay the SIGINT of the same Ctrl+C (npm
 * forwards it to its script's shell): stop signals closer together than
 * SIGNAL_DEBOUNCE_MS count once.
 */
import { spawn } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";

const INNER = "WS_STACK_SUPERVISED";
const SIGNAL_DEBOUNCE_MS = 400;

if (process.env[INNER] !== "1") supervise();
else await runStack();

/** The outer process: starts the real one detached from the terminal and relays signals to it. */
function supervise(): void {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    detached: true, // setsid(): not in the terminal's process group
    stdio: ["pipe", "inherit", "inherit"], // stdin: it stops when this process goes
    env: { ...process.env, [INNER]: "1", STACK_SUPERVISOR_PID: String(process.pid) },
  });
  let lastStop = 0;
  const relay = (signal: NodeJS.Signals) => () => {
    if (signal !== "SIGUSR2") {
      const now = Date.now();
      if (now - lastStop < SIGNAL_DEBOUNCE_MS) return; // the same Ctrl+C, relayed
      lastStop = now;
    }
    if (child.exitCode === null && child.signalCode === null) child.kill(signal === "SIGHUP" ? "SIGTERM" : signal);
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR2"] as const) process.on(signal, relay(signal));
  // If this process ends some other way, the stack still drains and stops.
  process.once("exit", () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  });
  child.once("error", (err) => {
    process.stderr.write(`stack: could not start: ${err.message}\n`);
    process.exit(1);
  });
  child.once("exit", (code, signal) => {
    process.exitCode = code ?? 128 + (signal ? (os.constants.signals[signal] ?? 1) : 1);
    process.exit();
  });
}

/** The inner process: owns the stack. */
async function runStack(): Promise<void> {
  type Stack = import("../harness/stack.js").Stack;
  type StackEvent = import("../harness/stack.js").StackEvent;
  type InstanceProcess = import("../harness/instance.js").InstanceProcess;
  type LogRecord = import("../harness/instance.js").LogRecord;

  const color = process.stdout.isTTY && !process.env.NO_COLOR;
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const say = (text: string): void => void process.stdout.write(`${paint("1", "stack")} ${text}\n`);
  const warn = (text: string): void => void process.stdout.write(`${paint("1;33", "stack")} ${text}\n`);

  let stack: Stack | undefined;
  let shutdown: Promise<void> | undefined;
  let rolling: Promise<void> | undefined;
  let presses = 0;
  const exited = new WeakSet<InstanceProcess>();

  /** Stops the stack and exits; before the stack is up, the start-up code does it. */
  const stopAll = (code: number): Promise<void> | undefined => {
    if (!stack) return undefined;
    const up = stack;
    return (shutdown ??= (async () => {
      const started = Date.now();
      try {
        await up.stop();
        say(`stopped in ${((Date.now() - started) / 1000).toFixed(1)} s: instances, nginx${up.redis ? " and Redis" : ""} are gone`);
      } catch (err) {
        warn(`stop failed: ${(err as Error).message}`);
        code ||= 1;
      }
      process.exit(code);
    })());
  };

  // Handlers before anything starts: a signal during start-up must not kill us with children alive.
  const stopSignal = (name: NodeJS.Signals) => {
    presses++;
    if (presses === 1) {
      say(`${name}: draining the instances, then nginx and Redis stop. Again: close their clients now.`);
      void stopAll(0);
    } else if (presses === 2) {
      warn(`${name} again: second SIGTERM to the instances, they close their clients now. Once more: kill everything.`);
      for (const inst of stack?.instances ?? []) if (!exited.has(inst)) inst.signal("SIGTERM");
    } else {
      warn(`${name} a third time: killing everything`);
      process.exit(130); // harness/processes.ts and nginx.ts SIGKILL every process they started
    }
  };
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(name, () => stopSignal(name));
  process.on("SIGUSR2", () => {
    if (!stack || shutdown || presses > 0) return warn("SIGUSR2 ignored: the stack is starting or stopping");
    if (rolling) return warn("SIGUSR2 ignored: a rolling restart is running");
    const started = Date.now();
    say("SIGUSR2: rolling restart, one instance after the other (each drains first)");
    rolling = stack
      .rollingRestart()
      .then(
        () => say(`rolling restart done in ${((Date.now() - started) / 1000).toFixed(1)} s`),
        (err: Error) => warn(`rolling restart stopped: ${err.message}`),
      )
      .finally(() => (rolling = undefined));
  });
  // The supervisor went away (its stdin pipe closed): stop as if told to.
  if (process.env.STACK_SUPERVISOR_PID) {
    process.stdin.on("end", () => {
      if (presses === 0) stopSignal("SIGTERM");
    });
    process.stdin.on("error", () => undefined);
    process.stdin.resume();
  }

  const { startStack } = await import("../harness/stack.js");
  const { INSTANCE_COUNT } = await import("../harness/nginx.js");

  // --- configuration ---------------------------------------------------------
  // Every variable the service reads, but those the stack sets itself for each instance.
  const { CONFIG_VARIABLES } = await import("../server/config.js");
  const PASS_THROUGH = CONFIG_VARIABLES.filter((key) => !["PORT", "HOST", "INSTANCE_ID", "REDIS_URL", "REDIS_CLUSTER_NODES", "LOG_FORMAT"].includes(key));
  const rawPort = process.env.STACK_PORT?.trim() || "8080";
  const basePort = Number(rawPort);
  if (!/^\d+$/.test(rawPort) || basePort < 1 || basePort + INSTANCE_COUNT > 65535) {
    process.stderr.write(
      `stack: STACK_PORT=${JSON.stringify(rawPort)} must be a port from 1 to ${65535 - INSTANCE_COUNT} (instances use the next ${INSTANCE_COUNT})\n`,
    );
    process.exit(2);
  }
  const env: Record<string, string> = {};
  for (const key of PASS_THROUGH) {
    const value = process.env[key];
    if (value !== undefined) env[key] = value;
  }
  const redisUrl = process.env.REDIS_URL?.trim() || undefined;
  const clusterNodes = process.env.REDIS_CLUSTER_NODES?.trim() || undefined;
  const redisCluster = clusterNodes ?? /^(1|true|yes)$/i.test(process.env.STACK_REDIS_CLUSTER?.trim() ?? "");

  // --- instance output -------------------------------------------------------
  // The service's own terminal format (pino-pretty with its options), one colour an instance.
  const { prettyFactory } = await import("pino-pretty");
  const { PRETTY_OPTIONS } = await import("../server/logger.js");
  // The instance is the coloured label in front, not repeated in the message.
  const prettify = prettyFactory({ ...PRETTY_OPTIONS, messageFormat: "{if component}[{component}] {end}{msg}", colorize: color });
  const ID_COLOR = ["36", "35", "34", "33"];
  const idLabel = (id: string) => {
    const n = Number(/^ws(\d+)$/.exec(id)?.[1] ?? 0);
    return paint(ID_COLOR[(n - 1 + ID_COLOR.length) % ID_COLOR.length]!, id.padEnd(3));
  };
  const printRecord = (id: string, r: LogRecord) => void process.stdout.write(`${idLabel(id)} ${prettify(r)}`);
  const followed = new WeakSet<InstanceProcess>();
  const otherPrinted = new WeakMap<InstanceProcess, number>();
  const flushOther = (inst: InstanceProcess) => {
    const from = otherPrinted.get(inst) ?? 0;
    for (const line of inst.otherOutput.slice(from)) if (line.trim()) process.stdout.write(`${idLabel(inst.id)} ${paint("31", "!")} ${line}\n`);
    otherPrinted.set(inst, inst.otherOutput.length);
  };
  /** Prints every log record of `inst`, past and future, and the rest of its output once it has ended. */
  const follow = (inst: InstanceProcess) => {
    if (followed.has(inst)) return;
    followed.add(inst);
    for (const r of inst.logs) printRecord(inst.id, r);
    inst.onLog((r) => printRecord(inst.id, r));
    void inst.ended.then(() => flushOther(inst));
  };
  setInterval(() => {
    for (const inst of stack?.instances ?? []) flushOther(inst);
  }, 1_000).unref();

  const onEvent = (e: StackEvent) => {
    switch (e.type) {
      case "instance-starting":
        follow(e.instance);
        break;
      case "instance-ready":
        if (e.restart) say(`${e.instance.id} is back: pid ${e.instance.pid}, /readyz 200`);
        break;
      case "instance-draining":
        if (stack) say(`${e.instance.id} (pid ${e.instance.pid}) draining`);
        break;
      case "instance-exited":
        exited.add(e.instance);
        if (!e.expected) warn(`${e.instance.id} (pid ${e.instance.pid}) exited by itself: ${describe(e.exit)}; SIGUSR2 restarts every instance`);
        else if (stack) say(`${e.instance.id} (pid ${e.instance.pid}) exited: ${describe(e.exit)}`);
        break;
      case "nginx-exited":
        if (!e.expected) {
          warn(`nginx exited by itself: ${describe(e.exit)}; stopping`);
          void stopAll(1);
        }
        break;
    }
  };
  const describe = (exit: { code: number | null; signal: string | null }) => (exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`);

  // --- start -----------------------------------------------------------------
  const redisPart = clusterNodes || redisUrl ? "" : redisCluster ? "a redis cluster (6 nodes), " : "redis-server, ";
  say(`starting ${redisPart}ws1..ws${INSTANCE_COUNT} and nginx on 127.0.0.1:${basePort}..${basePort + INSTANCE_COUNT}`);
  const started = Date.now();
  let up: Stack;
  try {
    up = await startStack({ basePort, env, redisUrl, redisCluster, onEvent });
  } catch (err) {
    warn(`could not start: ${(err as Error).message}`);
    process.exit(1);
  }
  stack = up;
  if (presses > 0) {
    say("stopping: a stop signal came during start-up");
    await stopAll(0);
    return;
  }

  const supervisor = process.env.STACK_SUPERVISOR_PID ?? String(process.pid);
  const lines = [
    `up in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    `  nginx   ${up.url}  (pid ${up.nginxPid}; ${up.url}/ is the demo page)`,
    ...up.instances.map((inst, i) => `  ${inst.id.padEnd(6)}  ${up.instanceUrl(i)}  (pid ${inst.pid})`),
    up.redisCluster
      ? `  redis   cluster: ${up.redisCluster.nodes.map((n) => n.port).join(", ")} on 127.0.0.1 (3 masters, 3 replicas)`
      : `  redis   ${up.redisUrl}${up.redis ? "" : clusterNodes ? "  (external cluster, from REDIS_CLUSTER_NODES)" : "  (external, from REDIS_URL)"}`,
    up.adminToken
      ? `  admin   curl -H 'Authorization: Bearer ${up.adminToken}' ${up.url}/clients   (ADMIN_TOKEN; set it yourself to choose one)`
      : "  admin   ADMIN_TOKEN is empty: the admin endpoints answer only on the instances' own ports, from this machine",
    `  rolling restart: kill -USR2 ${supervisor}    stop: Ctrl+C or kill ${supervisor}`,
  ];
  say(lines.join("\n"));
}
