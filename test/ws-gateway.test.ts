import { expect } from "chai";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type WsClient, wsRefusal } from "./helpers/clients.js";

describe("/ws and /ws/{clientId} (plain WebSocket)", () => {
  const defer = useCleanup();
  let t: TestApp;

  beforeEach(async () => {
    t = await startApp({ MAX_MESSAGE_BYTES: "1024" });
    defer(() => t.close());
  });

  const ws = async (path: string, opts: { origin?: string } = {}): Promise<WsClient> => {
    const c = await connectWs(`${t.wsUrl}${path}`, opts);
    defer(() => c.close());
    return c;
  };

  describe("/ws (the old service A)", () => {
    it("opens with the welcome line: Welcome!, the instance and the commands", async () => {
      const c = await ws("/ws");
      const line = await c.next();
      expect(line).to.match(/^ Welcome! Connected to Instance \[test-1\] as anon-\S+ at \d\d:\d\d:\d\d\. Commands: 'test' or 'ping' for status check\.$/);
    });

    it("broadcasts what a client sends to every connection, as 'User <from> (via <instance>) says: <text>'", async () => {
      const a = await ws("/ws");
      const b = await ws("/ws");
      const io = await connectIo(t.url, { clientId: "sio" });
      defer(() => io.close());
      const aId = /as (\S+) at/.exec(await a.next())![1];
      a.ws.send("hello from a");
      for (const c of [a, b]) expect(await c.next((l) => l.startsWith("User"))).to.equal(`User ${aId} (via test-1) says: hello from a`);
      expect(await io.next("message")).to.include({ text: "hello from a", from: aId, origin: "ws", instance: "test-1" });
    });

    it("renders Socket.IO messages and HTTP broadcasts as lines", async () => {
      const c = await ws("/ws");
      const io = await connectIo(t.url, { clientId: "carol" });
      defer(() => io.close());
      await io.socket.emitWithAck("message", "from socket.io");
      expect(await c.next((l) => l.startsWith("User"))).to.equal("User carol (via test-1) says: from socket.io");
      const res = await fetch(`${t.url}/broadcast-to-all`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: "Hello, clients!" }),
      });
      expect(await res.json()).to.deep.equal({ sent: 2, partial: false });
      expect(await c.next((l) => !l.startsWith(" Welcome"))).to.equal("Hello, clients!");
    });

    it("answers ping/test with the status line to everyone", async () => {
      const a = await ws("/ws");
      const b = await ws("/ws");
      await a.next();
      a.ws.send("test");
      for (const c of [a, b]) {
        const line = await c.next((l) => l.includes("TEST REQUEST"));
        expect(line).to.match(/^\[\d\d:\d\d:\d\d\] TEST REQUEST from anon-\S+: System is Active\. 2 client\(s\) on 1 instance\(s\): test-1 \(2\)$/);
      }
    });

    it("speaks JSON frames { type, data } with ?format=json, and takes { text } frames", async () => {
      const c = await ws("/ws?format=json");
      const welcome = await c.nextJson("welcome");
      expect(welcome).to.include({ instance: "test-1" });
      expect(welcome.commands).to.deep.equal(["ping", "test"]);
      c.ws.send(JSON.stringify({ text: "json hi" }));
      expect(await c.nextJson("message")).to.include({ text: "json hi", from: welcome.clientId, origin: "ws" });
      c.ws.send("plain text works too");
      expect(await c.nextJson("message")).to.include({ text: "plain text works too" });
      c.ws.send("ping");
      expect(await c.nextJson("notification", (n: { type: string }) => n.type === "status")).to.include({ requestedBy: welcome.clientId, clients: 1 });
    });

    it("answers a bad JSON-mode message with an error frame and stays open", async () => {
      const c = await ws("/ws?format=json");
      c.ws.send(JSON.stringify({ text: "" }));
      expect(await c.nextJson("error")).to.include({ code: "BAD_REQUEST" });
      c.ws.send(JSON.stringify({ text: "ok now" }));
      expect(await c.nextJson("message")).to.include({ text: "ok now" });
    });

    it("closes a binary frame with 1003 and an oversized frame with 1009, and keeps serving others", async () => {
      const a = await ws("/ws");
      const b = await ws("/ws");
      a.ws.send(Buffer.from([1, 2, 3]));
      expect((await a.closed).code).to.equal(1003);
      b.ws.send("y".repeat(1025));
      expect((await b.closed).code).to.equal(1009);
      const c = await ws("/ws");
      c.ws.send("still serving");
      expect(await c.next((l) => l.startsWith("User"))).to.match(/says: still serving$/);
    });

    it("refuses a disallowed Origin with 403 before the upgrade, and accepts localhost", async () => {
      const refused = await wsRefusal(`${t.wsUrl}/ws`, { origin: "https://evil.example" });
      expect(refused.status).to.equal(403);
      expect(JSON.parse(refused.body)).to.include({ code: "ORIGIN_NOT_ALLOWED" });
      const ok = await ws("/ws", { origin: "http://localhost:5173" });
      expect(await ok.next()).to.match(/Welcome!/);
    });

    it("answers an upgrade to an unknown path with 404", async () => {
      const refused = await wsRefusal(`${t.wsUrl}/nope`);
      expect(refused.status).to.equal(404);
    });
  });

  describe("/ws/{clientId} (the old service B)", () => {
    it("echoes text to the sender only, as 'Server echo: <text>'", async () => {
      const a = await ws("/ws/1");
      const b = await ws("/ws/2");
      await a.next();
      await b.next();
      a.ws.send("hi");
      expect(await a.next()).to.equal("Server echo: hi");
      b.ws.send("sentinel");
      expect(await b.next()).to.equal("Server echo: sentinel");
      expect(b.inbox.all((l) => l.includes("hi"))).to.deep.equal([]);
    });

    it("echoes as { type: 'echo' } in JSON mode", async () => {
      const c = await ws("/ws/json-1?format=json");
      expect(await c.nextJson("welcome")).to.include({ clientId: "json-1" });
      c.ws.send("x");
      expect(await c.nextJson("echo")).to.deep.equal({ text: "x" });
    });

    it("receives broadcasts: it belongs to the domain", async () => {
      const c = await ws("/ws/7");
      await c.next();
      await fetch(`${t.url}/broadcast-to-all`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"message":"to all"}' });
      expect(await c.next()).to.equal("to all");
    });

    it("refuses a duplicate id with the old error frame and close 1008", async () => {
      const first = await ws("/ws/dup");
      await first.next();
      const second = await ws("/ws/dup");
      expect(JSON.parse(await second.next())).to.deep.equal({ type: "error", code: 1008, message: "Client dup is already connected" });
      expect((await second.closed).code).to.equal(1008);
      // The id is shared with Socket.IO: one id, one connection.
      const err = await connectIo(t.url, { clientId: "dup" }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).to.equal("Client dup is already connected");
      first.ws.send("still mine");
      expect(await first.next()).to.equal("Server echo: still mine");
    });

    it("refuses an invalid id with HTTP 400 before the upgrade", async () => {
      for (const bad of ["has%20space", "x".repeat(65), "%C3%BC"]) {
        const refused = await wsRefusal(`${t.wsUrl}/ws/${bad}`);
        expect(refused.status, bad).to.equal(400);
        expect(JSON.parse(refused.body)).to.include({ code: "INVALID_CLIENT_ID" });
      }
    });

    it("lists /ws ids with everyone else's in GET /clients, in connection order", async () => {
      const a = await ws("/ws/10");
      await a.next();
      const io = await connectIo(t.url, { clientId: "sio-1" });
      defer(() => io.close());
      const b = await ws("/ws/11");
      await b.next();
      const res = await (await fetch(`${t.url}/clients`)).json();
      expect(res).to.include({ partial: false });
      expect(res.clients).to.deep.equal(["10", "sio-1", "11"]);
      expect(
        res.connections.map((c: { clientId: string; user: string }) => `${c.clientId}/${c.user}`),
        "each connection with its user",
      ).to.have.members(["10/10", "sio-1/sio-1", "11/11"]);
    });
  });
});
