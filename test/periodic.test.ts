import { expect } from "chai";
import { startApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";

describe("periodic notifications", () => {
  const defer = useCleanup();

  it("sends each client one notification per PERIODIC_INTERVAL_SEC, on every transport", async () => {
    const t = await startApp({ PERIODIC_INTERVAL_SEC: "0.2" });
    defer(() => t.close());
    const io = await connectIo(t.url, { clientId: "p" });
    const text = await connectWs(`${t.wsUrl}/ws`);
    const json = await connectWs(`${t.wsUrl}/ws/5?format=json`);
    defer(() => [io, text, json].forEach((c) => c.close()));

    const ticks: number[] = [];
    for (let i = 0; i < 4; i++) {
      const n = await io.next("notification", (n: { type: string }) => n.type === "periodic");
      expect(n).to.include({ type: "periodic", instance: "test-1", intervalSec: 0.2 });
      ticks.push(Date.parse(n.at));
    }
    // One an interval: never two within the same interval.
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).to.be.greaterThan(150);
    expect(await text.next((l) => l.includes("Periodic"))).to.match(/^\[\d\d:\d\d:\d\d\] SYSTEM \(test-1\): Periodic Notification \(Every 0\.2s\)$/);
    expect(await json.nextJson("notification")).to.include({ type: "periodic" });
  });

  it("sends none with PERIODIC_INTERVAL_SEC=0", async () => {
    const t = await startApp({ PERIODIC_INTERVAL_SEC: "0" });
    defer(() => t.close());
    const io = await connectIo(t.url, { clientId: "p" });
    defer(() => io.close());
    // Let a round trip pass, then check nothing periodic came before the sentinel.
    await io.socket.emitWithAck("message", "sentinel");
    await io.next("message");
    expect(io.inbox.all((e) => e.event === "notification")).to.deep.equal([]);
  });
});
