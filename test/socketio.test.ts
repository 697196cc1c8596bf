import { expect } from "chai";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, ioRefusal, type IoClient } from "./helpers/clients.js";

describe("Socket.IO gateway (namespace /)", () => {
  const defer = useCleanup();
  let t: TestApp;

  beforeEach(async () => {
    t = await startApp();
    defer(() => t.close());
  });

  const client = async (opts: Parameters<typeof connectIo>[1] = {}): Promise<IoClient> => {
    const c = await connectIo(t.url, opts);
    defer(() => c.close());
    return c;
  };

  for (const transport of ["polling", "websocket"] as const) {
    it(`welcomes a ${transport} client with its id, the instance and the commands`, async () => {
      const c = await client({ transports: [transport], clientId: "alice" });
      const welcome = await c.next("welcome");
      expect(welcome).to.include({ clientId: "alice", instance: "test-1" });
      expect(welcome.commands).to.deep.equal(["ping", "test"]);
      expect(Date.parse(welcome.at)).to.be.a("number").and.not.NaN;
      expect(c.socket.io.engine.transport.name).to.equal(transport);
    });
  }

  it("assigns an id to a client that brings none", async () => {
    const c = await client();
    const welcome = await c.next("welcome");
    expect(welcome.clientId).to.match(/^anon-[A-Za-z0-9_-]+$/);
  });

  it("broadcasts a message to every client, the sender included, and acks it", async () => {
    const a = await client({ clientId: "a" });
    const b = await client({ clientId: "b", transports: ["polling"] });
    const ack = await a.socket.emitWithAck("message", "hello all");
    expect(ack).to.deep.equal({ ok: true });
    for (const c of [a, b]) {
      const m = await c.next("message");
      expect(m).to.include({ text: "hello all", from: "a", instance: "test-1", origin: "socket.io" });
      expect(m).not.to.have.property("room");
      expect(Date.parse(m.at)).not.NaN;
    }
  });

  it("accepts { text } objects and messages without an ack", async () => {
    const a = await client({ clientId: "a" });
    a.socket.emit("message", { text: "object form" });
    expect((await a.next("message")).text).to.equal("object form");
  });

  it("answers a bad message with { ok: false, error } and keeps serving", async () => {
    const a = await client({ clientId: "a" });
    for (const bad of [42, "", null, { text: 5 }, { text: "x", room: "no spaces allowed" }]) {
      const ack = await a.socket.emitWithAck("message", bad);
      expect(ack.ok, JSON.stringify(bad)).to.equal(false);
      expect(ack.error).to.be.a("string").and.not.empty;
    }
    const tooBig = await a.socket.emitWithAck("message", "x".repeat(65_537));
    expect(tooBig).to.include({ ok: false, code: "TOO_LARGE" });
    // Nothing of the above was broadcast: the sentinel is the first message to arrive.
    await a.socket.emitWithAck("message", "sentinel");
    expect((await a.next("message")).text).to.equal("sentinel");
    expect(a.inbox.all((e) => e.event === "message")).to.have.length(1);
  });

  it("delivers a room message only to the room's members", async () => {
    const member = await client({ clientId: "member" });
    const outsider = await client({ clientId: "outsider" });
    expect(await member.socket.emitWithAck("join", "red")).to.deep.equal({ ok: true, room: "red" });
    const ack = await outsider.socket.emitWithAck("message", { text: "to red", room: "red" });
    expect(ack).to.deep.equal({ ok: true });
    const m = await member.next("message");
    expect(m).to.include({ text: "to red", room: "red", from: "outsider" });
    // Sentinel: the outsider's first message must be the broadcast after it.
    await member.socket.emitWithAck("message", "everyone");
    expect((await outsider.next("message")).text).to.equal("everyone");
    expect(outsider.inbox.all((e) => e.event === "message")).to.have.length(1);
  });

  it("stops room delivery after leave, and refuses bad room names", async () => {
    const c = await client({ clientId: "c" });
    await c.socket.emitWithAck("join", "blue");
    expect(await c.socket.emitWithAck("leave", "blue")).to.deep.equal({ ok: true, room: "blue" });
    await c.socket.emitWithAck("message", { text: "to blue", room: "blue" });
    await c.socket.emitWithAck("message", "sentinel");
    expect((await c.next("message")).text).to.equal("sentinel");
    expect(await c.socket.emitWithAck("join", "")).to.include({ ok: false, code: "BAD_REQUEST" });
    expect(await c.socket.emitWithAck("join", { room: 1 })).to.include({ ok: false });
  });

  it("keeps client rooms apart from Socket.IO's private per-socket rooms", async () => {
    const victim = await client({ clientId: "victim" });
    const snoop = await client({ clientId: "snoop" });
    await snoop.socket.emitWithAck("join", victim.socket.id!.replace(/[^A-Za-z0-9_.:-]/g, "_"));
    // Even a room named like the victim's socket id is a different room.
    await snoop.socket.emitWithAck("message", { text: "private?", room: victim.socket.id!.replace(/[^A-Za-z0-9_.:-]/g, "_") });
    await snoop.socket.emitWithAck("message", "sentinel");
    expect((await victim.next("message")).text).to.equal("sentinel");
  });

  for (const command of ["ping", " TEST ", "Ping"]) {
    it(`sends a status notification to everyone on ${JSON.stringify(command)}`, async () => {
      const a = await client({ clientId: "a" });
      const b = await client({ clientId: "b", transports: ["polling"] });
      await a.socket.emitWithAck("message", command);
      for (const c of [a, b]) {
        expect((await c.next("message")).text).to.equal(command);
        const n = await c.next("notification", (n: { type: string }) => n.type === "status");
        expect(n).to.include({ type: "status", requestedBy: "a", clients: 2, partial: false });
        expect(n.instances).to.deep.equal([{ id: "test-1", clients: 2, draining: false }]);
      }
    });
  }

  it("sends the status notification on the status event, without a chat line", async () => {
    const a = await client({ clientId: "a" });
    expect(await a.socket.emitWithAck("status")).to.deep.equal({ ok: true });
    const n = await a.next("notification");
    expect(n).to.include({ type: "status", requestedBy: "a", clients: 1 });
    expect(a.inbox.all((e) => e.event === "message")).to.have.length(0);
  });

  it("refuses a clientId that is already connected, and frees it on disconnect", async () => {
    const first = await client({ clientId: "dup" });
    const err = await ioRefusal(t.url, { clientId: "dup" });
    expect(err.message).to.equal("Client dup is already connected");
    expect(err.data).to.deep.equal({ code: "DUPLICATE_CLIENT_ID" });
    // The first one is unaffected.
    await first.socket.emitWithAck("message", "still here");
    expect((await first.next("message")).text).to.equal("still here");
    const gone = t.logs.next((r) => r.msg === "disconnected" && r.clientId === "dup");
    first.close();
    await gone;
    const again = await client({ clientId: "dup" });
    expect((await again.next("welcome")).clientId).to.equal("dup");
  });

  for (const bad of ["", "has space", "x".repeat(65), "ünï", 42]) {
    it(`refuses the invalid clientId ${JSON.stringify(bad)}`, async () => {
      const err = await ioRefusal(t.url, { auth: { clientId: bad } });
      expect(err.data).to.deep.equal({ code: "INVALID_CLIENT_ID" });
      expect(err.message).to.match(/invalid clientId/);
    });
  }

  it("accepts integer-like and dotted ids, as the old services did", async () => {
    for (const id of ["1", "42", "svc.worker-1_a"]) {
      const c = await client({ clientId: id });
      expect((await c.next("welcome")).clientId).to.equal(id);
    }
  });

  it("gives Engine.IO session ids the instance prefix nginx routes on", async () => {
    const c = await client({ transports: ["polling"] });
    expect(c.socket.io.engine.id).to.match(/^test-1\./);
  });

  it("refuses a browser origin that is not allowed, and accepts localhost", async () => {
    const err = await ioRefusal(t.url, { transports: ["polling"], extraHeaders: { origin: "https://evil.example" } });
    expect(err.message).to.match(/xhr poll error/);
    const ok = await client({ transports: ["polling"], extraHeaders: { origin: "http://localhost:3000" } });
    expect(ok.socket.connected).to.equal(true);
  });
});

describe("Socket.IO with CORS_ORIGINS", () => {
  const defer = useCleanup();
  it("accepts a listed origin and answers its preflight with CORS headers", async () => {
    const t = await startApp({ CORS_ORIGINS: "https://app.example.com" });
    defer(() => t.close());
    const res = await fetch(`${t.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: "https://app.example.com" } });
    expect(res.status).to.equal(200);
    expect(res.headers.get("access-control-allow-origin")).to.equal("https://app.example.com");
    const refused = await fetch(`${t.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: "https://other.example.com" } });
    expect(refused.status).to.equal(403);
  });
});
