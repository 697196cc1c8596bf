/**
 * What one connect costs with client tokens on: the instance's CPU and the
 * Redis commands of a Socket.IO connect (and its disconnect), side by side in
 * one run, for this checkout without and with the per-user cap's bookkeeping
 * (MAX_CONNECTIONS_PER_USER), and with --before DIR that checkout's server.
 * Rounds alternate the variants so the machine's noise falls on all of them.
 *
 *   node --import tsx bench/connect-cost.ts [--before DIR] [--clients N] [--rounds N]
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { SignJWT } from "jose";
import { io, type Socket } from "socket.io-client";
import { type InstanceProcess, startInstance } from "../harness/instance.js";
import { freePort } from "../harness/ports.js";
import { cpuSeconds } from "../harness/procfs.js";
import { startRedis } from "../harness/redis.js";
import { redisCommand } from "./lib/redis-raw.js";

const { values } = parseArgs({
  options: { before: { type: "string" }, clients: { type: "string", default: "1000" }, rounds: { type: "string", default: "3" } },
});
const CLIENTS = Number(values.clients);
const ROUNDS = Number(values.rounds);
const SECRET = "connect-cost-secret-of-at-least-32-bytes";
const CONCURRENCY = 50;

interface Variant {
  name: string;
  env: Record<string, string>;
  start: typeof startInstance;
}

const here: Variant[] = [
  { name: "this checkout, no per-user cap", env: { MAX_CONNECTIONS_PER_USER: "0" }, start: startInstance },
  { name: "this checkout, MAX_CONNECTIONS_PER_USER=5", env: { MAX_CONNECTIONS_PER_USER: "5" }, start: startInstance },
];
const before: Variant[] = values.before
  ? [
      {
        name: `before (${path.basename(values.before)})`,
        env: {},
        start: ((await import(pathToFileURL(path.join(values.before, "harness", "instance.ts")).href)) as { startInstance: typeof startInstance })
          .startInstance,
      },
    ]
  : [];
const variants = [...before, ...here];

/** Calls of every command Redis has run since it started (INFO commandstats). */
async function redisCalls(url: string): Promise<number> {
  const text = String(await redisCommand(url, ["INFO", "commandstats"]));
  return [...text.matchAll(/calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}

const key = new TextEncoder().encode(SECRET);
/** One token a connection, each its own user: the before checkout refuses a user's second connection. */
const tokens = await Promise.all(
  Array.from({ length: CLIENTS }, (_, i) => new SignJWT({ sub: `user-${i}` }).setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h").sign(key)),
);

async function connectAll(url: string): Promise<Socket[]> {
  const sockets: Socket[] = [];
  let next = 0;
  const worker = async () => {
    while (next < CLIENTS) {
      const token = tokens[next++]!;
      const s = io(url, { transports: ["websocket"], auth: { token }, reconnection: false, forceNew: true });
      await new Promise<void>((resolve, reject) => {
        s.once("welcome", () => resolve());
        s.once("connect_error", reject);
      });
      sockets.push(s);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return sockets;
}

interface Sample {
  connectCpuUs: number;
  connectCommands: number;
  disconnectCpuUs: number;
  disconnectCommands: number;
}

async function measure(v: Variant, redisUrl: string): Promise<Sample> {
  const port = await freePort();
  const inst: InstanceProcess = await v.start({
    env: {
      PORT: String(port),
      INSTANCE_ID: "cost-1",
      REDIS_URL: redisUrl,
      AUTH_JWT_SECRET: SECRET,
      PERIODIC_INTERVAL_SEC: "0",
      LOG_LEVEL: "warn",
      RATE_LIMIT_PENALTY_SEC: "0",
      ...v.env,
    },
  });
  try {
    const url = `http://127.0.0.1:${port}`;
    const keys0 = Number(await redisCommand(redisUrl, ["DBSIZE"]));
    const cpu0 = cpuSeconds(inst.pid)!;
    const calls0 = await redisCalls(redisUrl);
    const sockets = await connectAll(url);
    const cpu1 = cpuSeconds(inst.pid)!;
    const calls1 = await redisCalls(redisUrl);
    for (const s of sockets) s.close();
    // Every id given back, here and in Redis (releases are sent without waiting for them).
    for (let i = 0; i < 400; i++) {
      const m = await (await fetch(`${url}/metrics`)).text();
      if (/^wbs_client_ids 0$/m.test(m) && Number(await redisCommand(redisUrl, ["DBSIZE"])) <= keys0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const cpu2 = cpuSeconds(inst.pid)!;
    const calls2 = await redisCalls(redisUrl);
    return {
      connectCpuUs: ((cpu1 - cpu0) / CLIENTS) * 1e6,
      connectCommands: (calls1 - calls0 - 1) / CLIENTS,
      disconnectCpuUs: ((cpu2 - cpu1) / CLIENTS) * 1e6,
      disconnectCommands: (calls2 - calls1 - 1) / CLIENTS,
    };
  } finally {
    await inst.stop(2_000);
  }
}

const redis = await startRedis();
const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const v of r % 2 === 0 ? variants : [...variants].reverse()) {
      await redisCommand(redis.url, ["FLUSHALL"]);
      const s = await measure(v, redis.url);
      samples.get(v.name)!.push(s);
      process.stderr.write(`round ${r + 1}, ${v.name}: ${s.connectCpuUs.toFixed(0)} µs CPU, ${s.connectCommands.toFixed(2)} Redis commands a connect\n`);
    }
  }
} finally {
  await redis.stop();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const spread = (xs: number[]) => `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}`;
const baseline = samples.get(here[0]!.name)!;
console.log(
  `\nA Socket.IO connect with a client token (${CLIENTS} connects a round, ${ROUNDS} rounds; median, range; ratio to "${here[0]!.name}", median of the rounds' ratios)`,
);
console.log(
  "| variant | instance CPU a connect, µs | ratio | Redis commands a connect (a script's own commands included) | CPU a disconnect, µs | Redis commands a disconnect |",
);
console.log("| --- | --- | --- | --- | --- | --- |");
for (const [name, xs] of samples) {
  const cpu = xs.map((s) => s.connectCpuUs);
  const ratios = xs.map((s, i) => s.connectCpuUs / baseline[i]!.connectCpuUs);
  console.log(
    `| ${name} | ${median(cpu).toFixed(0)} (${spread(cpu)}) | ${median(ratios).toFixed(2)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) | ` +
      `${median(xs.map((s) => s.connectCommands)).toFixed(2)} | ${median(xs.map((s) => s.disconnectCpuUs)).toFixed(0)} | ${median(xs.map((s) => s.disconnectCommands)).toFixed(2)} |`,
  );
}
