import { expect } from "chai";
import { ConfigError, loadConfig } from "../server/config.js";
import { startInstance } from "../harness/instance.js";
import { useCleanup } from "./helpers/cleanup.js";

describe("configuration", () => {
  const defer = useCleanup();

  it("has the documented defaults", () => {
    const c = loadConfig({});
    expect(c).to.deep.include({
      port: 8000,
      host: "127.0.0.1",
      logLevel: "info",
      forcedShutdownAfterMs: 1_800_000,
      progressLogEveryMs: 5_000,
      periodicIntervalMs: 10_000,
      maxMessageBytes: 65_536,
      maxBufferedBytes: 8 * 1024 * 1024,
      corsOrigins: undefined,
      adminToken: undefined,
      redisUrl: undefined,
    });
    expect(c.instanceId).to.match(/:8000$/);
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it("accepts fractions of seconds and 0 to turn periodic notifications off", () => {
    const c = loadConfig({
      FORCED_SHUTDOWN_AFTER_SEC: "0.2",
      PROGRESS_LOG_EVERY_SEC: "0.05",
      PERIODIC_INTERVAL_SEC: "0",
      CORS_ORIGINS: "https://a.example, http://b.example:8080",
    });
    expect(c).to.deep.include({ forcedShutdownAfterMs: 200, progressLogEveryMs: 50, periodicIntervalMs: 0 });
    expect(c.corsOrigins).to.deep.equal(["https://a.example", "http://b.example:8080"]);
  });

  it("takes MAX_BUFFERED_BYTES of 0 (off) or at least MAX_MESSAGE_BYTES", () => {
    expect(loadConfig({ MAX_BUFFERED_BYTES: "0" }).maxBufferedBytes).to.equal(0);
    expect(loadConfig({ MAX_MESSAGE_BYTES: String(16 * 1024 * 1024) }).maxBufferedBytes, "unset: room for 4 of the largest").to.equal(64 * 1024 * 1024);
    expect(loadConfig({ MAX_BUFFERED_BYTES: "65536" }).maxBufferedBytes).to.equal(65_536);
    expect(() => loadConfig({ MAX_BUFFERED_BYTES: "1000" })).to.throw(ConfigError, /MAX_BUFFERED_BYTES="1000" must be 0 \(off\) or at least MAX_MESSAGE_BYTES/);
    expect(() => loadConfig({ MAX_BUFFERED_BYTES: "-1" })).to.throw(ConfigError, /MAX_BUFFERED_BYTES/);
  });

  it("names every bad variable in one error", () => {
    let err: unknown;
    try {
      loadConfig({
        PORT: "eighty",
        FORCED_SHUTDOWN_AFTER_SEC: "-1",
        LOG_LEVEL: "loud",
        REDIS_URL: "localhost:6379",
        MAX_MESSAGE_BYTES: "1.5",
        CORS_ORIGINS: "not a url",
      });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join("\n");
    for (const name of ["PORT", "FORCED_SHUTDOWN_AFTER_SEC", "LOG_LEVEL", "REDIS_URL", "MAX_MESSAGE_BYTES", "CORS_ORIGINS"]) expect(problems).to.include(name);
  });

  it("stops the process at start with one message and exit code 1", async () => {
    const inst = await startInstance({ env: { PORT: "1", PERIODIC_INTERVAL_SEC: "soon", LOG_LEVEL: "chatty" }, waitForListening: false });
    defer(() => inst.stop(500));
    const exit = await inst.exited;
    expect(exit.code).to.equal(1);
    const out = inst.otherOutput.filter(Boolean);
    expect(out).to.have.length(1);
    expect(out[0]).to.match(/^ws-broadcast-service: invalid configuration: /);
    expect(out[0]).to.include("PERIODIC_INTERVAL_SEC").and.include("LOG_LEVEL");
  });
});
