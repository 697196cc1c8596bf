import { type App, createApp } from "./app.js";
import { type Config, ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./logger.js";

// The entry point: the only file that touches the process (environment, signals, exit).

let config: Config;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`ws-broadcast-service: ${err.message}\n`);
  process.exit(1);
}

const log = createLogger({
  instance: config.instanceId,
  level: config.logLevel,
  pretty: (config.logFormat ?? (process.stdout.isTTY ? "pretty" : "json")) === "pretty",
});

// A signal may come before the app exists (while Redis connects): remember it.
const pending: string[] = [];
let onSignal: (name: string) => void = (name) => void pending.push(name);
for (const name of ["SIGTERM", "SIGINT"] as const) process.on(name, () => onSignal(name));

// The Redis adapter publishes without awaiting; while Redis is away such a
// promise may reject. Log it instead of crashing every client of this instance.
process.on("unhandledRejection", (err) => log.error({ err }, "unhandled rejection"));

log.info({ cluster: Boolean(config.redisUrl || config.redisClusterNodes) }, "starting");
let app: App;
try {
  app = await createApp(config, { log });
} catch (err) {
  log.fatal({ err: (err as Error).message }, "could not start");
  process.exit(1);
}
const { shutdown } = app;
onSignal = (name) => shutdown.signal(name);

if (pending.length > 0) {
  log.info({ signal: pending[0] }, "signal during start-up: not listening");
  await shutdown.closeNow();
} else {
  try {
    await app.listen();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, "could not listen");
    await shutdown.closeNow();
    process.exit(1);
  }
  await shutdown.done;
}

// Everything is closed, so the event loop should empty and the process end by
// itself. If a handle is still open, say so and exit anyway.
setTimeout(() => {
  log.warn("handles still open after close; exiting");
  process.exit(0);
}, 1_000).unref();
