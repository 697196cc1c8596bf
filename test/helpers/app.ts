import { createApp, type App } from "../../server/app.js";
import { loadConfig } from "../../server/config.js";
import { createLogger } from "../../server/logger.js";
import { Inbox } from "./inbox.js";

export type LogRecord = { level: string; msg: string; [k: string]: unknown };

export interface TestApp {
  app: App;
  url: string;
  wsUrl: string;
  logs: Inbox<LogRecord>;
  close(): Promise<void>;
}

/**
 * One instance in this process, built by the same factory as production, on
 * port 0 (read back from the server), its log records collected for assertions.
 */
export async function startApp(env: Record<string, string> = {}): Promise<TestApp> {
  const config = loadConfig({ PORT: "0", INSTANCE_ID: "test-1", PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "debug", ...env });
  const logs = new Inbox<LogRecord>();
  const log = createLogger({
    instance: config.instanceId,
    level: config.logLevel,
    destination: { write: (line: string) => void logs.push(JSON.parse(line) as LogRecord) },
  });
  const app = await createApp(config, { log });
  const { port } = await app.listen();
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    logs,
    close: () => app.shutdown.closeNow(),
  };
}
