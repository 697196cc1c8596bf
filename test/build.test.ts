import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect } from "chai";
import { freePort } from "../harness/ports.js";
import { startInstance } from "../harness/instance.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);

describe("the compiled build (npm run build, node dist/server/main.js)", function () {
  this.timeout(120_000);
  const defer = useCleanup();

  before(async function () {
    this.timeout(120_000);
    await run("npm", ["run", "--silent", "build"], { cwd: ROOT });
  });

  it("compiles the service alone to plain JavaScript, with the demo page beside it", () => {
    expect(existsSync(path.join(ROOT, "dist/server/main.js"))).to.equal(true);
    expect(existsSync(path.join(ROOT, "dist/client-demo/public/index.html"))).to.equal(true);
    // Only the service: no tests, benchmarks, scripts or harness in the build.
    for (const dir of ["test", "bench", "scripts", "harness"]) expect(existsSync(path.join(ROOT, "dist", dir)), `dist/${dir}`).to.equal(false);
    const main = readFileSync(path.join(ROOT, "dist/server/main.js"), "utf8");
    expect(main).to.not.match(/from "tsx"|--import tsx/);
  });

  it("runs without tsx: serves the page, Socket.IO and /ws, and drains on SIGTERM", async () => {
    const port = await freePort();
    // No --import tsx: a .ts import left in the build would fail here.
    const instance = await startInstance({ build: "dist", env: { PORT: String(port), INSTANCE_ID: "built-1", PERIODIC_INTERVAL_SEC: "0" } });
    defer(() => instance.stop(2_000));
    const page = await fetch(`${instance.url}/`);
    expect(page.status).to.equal(200);
    expect(await page.text()).to.match(/<html/i);
    expect((await fetch(`${instance.url}/socket.io/socket.io.min.js`)).status).to.equal(200);

    const sio = await connectIo(instance.url, { clientId: "built-sio" });
    defer(() => sio.close());
    expect(await sio.next("welcome")).to.include({ clientId: "built-sio", instance: "built-1" });
    const line = await connectWs(`${instance.url.replace(/^http/, "ws")}/ws`);
    defer(() => line.close());
    await line.next((l) => l.startsWith(" Welcome"));
    await sio.socket.emitWithAck("message", "from the build");
    expect(await line.next((l) => l.includes("from the build"))).to.equal("User built-sio (via built-1) says: from the build");

    sio.close();
    line.close();
    await instance.waitForLog((r) => r.msg === "listening");
    instance.signal("SIGTERM");
    expect((await instance.exited).code).to.equal(0);
  });
});
