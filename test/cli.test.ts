import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { type Exit, spawnChild, stopChild } from "../harness/processes.js";
import type { Arrivals } from "../harness/waiting.js";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";
import { startDrainingServer } from "./helpers/draining-server.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Long enough for tsx to start a child and for a back-off or two. */
const LINE_TIMEOUT_MS = 10_000;

interface Cli {
  /** stdout and stderr lines, in order, each handed out once by `next`. */
  lines: Arrivals<string>;
  /** The next output line matching `pattern`. */
  next(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Types a line. */
  type(line: string): void;
  /** Ends stdin (Ctrl+D, a closed pipe). */
  end(): void;
  exited: Promise<Exit>;
  pid: number;
}

describe("terminal client (client-demo/cli.ts) and example (client-demo/example.ts)", function () {
  this.timeout(30_000);
  const defer = useCleanup();

  /** A real child process, as `npm run client -- ...` runs it, with stdin a pipe. */
  const spawnScript = (script: string, args: string[]): Cli => {
    const child = spawnChild(process.execPath, ["--import", "tsx", script, ...args], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: "1" },
      stdin: "pipe",
      name: script,
    });
    defer(() => stopChild(child.proc, child.exited));
    const stdin = child.proc.stdin!;
    stdin.on("error", () => undefined); // writes after the child left
    return {
      lines: child.output,
      next: (pattern, timeoutMs = LINE_TIMEOUT_MS) => child.output.next((l) => pattern.test(l), timeoutMs, `a line matching ${pattern}`),
      type: (line) => void stdin.write(`${line}\n`),
      end: () => void stdin.end(),
      exited: child.exited,
      pid: child.pid,
    };
  };
  const cli = (args: string[]) => spawnScript("client-demo/cli.ts", args);

  const app = async (env: Record<string, string> = {}): Promise<TestApp> => {
    const t = await startApp(env);
    defer(() => t.close());
    return t;
  };
  const ioClient = async (url: string, clientId: string) => {
    const c = await connectIo(url, { clientId });
    defer(() => c.close());
    return c;
  };

  /** `[HH:MM:SS] tag    text` -> the JSON after the tag. */
  const jsonAfterTag = (line: string, tag: string): any => JSON.parse(line.slice(line.indexOf(`${tag} `) + tag.length + 1));

  describe("arguments", () => {
    it("prints the usage on --help and exits 0", async () => {
      const c = cli(["--help"]);
      await c.next(/^usage: npm run client -- \[url\] \[--ws\] \[--id ID\] \[--room R\] \[--json\] \[--token JWT \| --token-file PATH\]$/);
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
    });

    for (const bad of [["--nope"], ["http://a", "http://b"], ["not a url"], ["ftp://x"], ["--ws", "--room", "r"], ["--id"]]) {
      it(`prints the usage and exits 2 on bad arguments: ${bad.join(" ")}`, async () => {
        const c = cli(bad);
        await c.next(/^client: /);
        await c.next(/^usage: /);
        expect(await c.exited).to.deep.equal({ code: 2, signal: null });
      });
    }
  });

  describe("Socket.IO mode", () => {
    it("connects and prints the welcome: instance and client id, with a [HH:MM:SS] timestamp", async () => {
      const t = await app();
      const c = cli([t.url, "--id", "alice"]);
      expect(await c.next(/connected to/)).to.match(/^\[\d\d:\d\d:\d\d\] info +connected to test-1 as alice$/);
    });

    it("broadcasts a typed line: the CLI and another Socket.IO client both get it", async () => {
      const t = await app();
      const other = await ioClient(t.url, "other");
      const c = cli([t.url, "--id", "alice"]);
      await c.next(/connected to test-1 as alice/);
      c.type("hello from the terminal");
      expect(await c.next(/hello from the terminal/)).to.match(/ msg +alice \(via test-1\): hello from the terminal$/);
      expect(await other.next("message")).to.include({ text: "hello from the terminal", from: "alice", origin: "socket.io" });
      // And it prints what others send.
      await other.socket.emitWithAck("message", "hello terminal");
      await c.next(/ msg +other \(via test-1\): hello terminal$/);
    });

    it("/status prints a status notification", async () => {
      const t = await app();
      await ioClient(t.url, "other");
      const c = cli([t.url, "--id", "alice"]);
      await c.next(/connected to/);
      c.type("/status");
      expect(await c.next(/ status /)).to.match(/ status +requested by alice: 2 client\(s\) on 1 instance\(s\): test-1 \(2\)$/);
    });

    it("--room joins the room, sends typed lines to it, and prints room messages", async () => {
      const t = await app();
      const member = await ioClient(t.url, "member");
      const outsider = await ioClient(t.url, "outsider");
      expect(await member.socket.emitWithAck("join", "red")).to.deep.equal({ ok: true, room: "red" });
      const c = cli([t.url, "--id", "alice", "--room", "red"]);
      await c.next(/ info +joined #red$/);

      await member.socket.emitWithAck("message", { text: "to red", room: "red" });
      await c.next(/ msg +member \(via test-1\) in #red: to red$/);

      c.type("from alice to red");
      expect(await member.next("message", (m) => m.from === "alice")).to.include({ text: "from alice to red", room: "red" });
      // The outsider must not get it: a broadcast sentinel is the first message it sees from alice.
      c.type("/leave red");
      await c.next(/ info +left #red$/);
      c.type("sentinel");
      expect(await outsider.next("message", (m) => m.from === "alice")).to.include({ text: "sentinel" });
      expect(outsider.inbox.all((e) => e.event === "message" && (e.args[0] as { from: string }).from === "alice")).to.have.length(1);
    });

    it("/join R works at the prompt and room messages arrive", async () => {
      const t = await app();
      const sender = await ioClient(t.url, "sender");
      const c = cli([t.url]);
      await c.next(/connected to test-1 as anon-/);
      c.type("/join blue");
      await c.next(/ info +joined #blue$/);
      await sender.socket.emitWithAck("message", { text: "blue news", room: "blue" });
      await c.next(/ in #blue: blue news$/);
    });

    it("prints an error when the server refuses a message (the ack says why)", async () => {
      const t = await app({ MAX_MESSAGE_BYTES: "16" });
      const c = cli([t.url, "--id", "alice"]);
      await c.next(/connected to/);
      c.type("this line is longer than sixteen bytes");
      await c.next(/ error +not sent: .*\(TOO_LARGE\)$/);
    });

    it("--json prints the raw JSON payloads", async () => {
      const t = await app();
      const c = cli([t.url, "--id", "carol", "--json"]);
      const welcome = jsonAfterTag(await c.next(/ welcome +\{/), "welcome");
      expect(welcome).to.include({ clientId: "carol", instance: "test-1" });
      c.type("json please");
      const m = jsonAfterTag(await c.next(/ message +\{/), "message");
      expect(m).to.include({ text: "json please", from: "carol", instance: "test-1", origin: "socket.io" });
      c.type("/status");
      const n = jsonAfterTag(await c.next(/ notification +\{/), "notification");
      expect(n).to.include({ type: "status", requestedBy: "carol", clients: 1 });
    });

    it("refuses to start with a client id that is taken (exit 1)", async () => {
      const t = await app();
      await ioClient(t.url, "taken");
      const c = cli([t.url, "--id", "taken"]);
      await c.next(/ error +refused: .*\(DUPLICATE_CLIENT_ID\)$/);
      expect((await c.exited).code).to.equal(1);
    });
  });

  describe("/ws mode", () => {
    it("--ws connects to /ws, prints frames with a timestamp, and broadcasts typed lines", async () => {
      const t = await app();
      const watcher = await connectWs(`${t.wsUrl}/ws`);
      defer(() => watcher.close());
      const c = cli([t.url, "--ws"]);
      await c.next(/^\[\d\d:\d\d:\d\d\] ws +\s?Welcome! Connected to Instance \[test-1\] as anon-/);
      const id = /connected to test-1 as (anon-\S+)$/.exec(await c.next(/ info +connected to test-1 as /))![1]!;
      c.type("hi over ws");
      await c.next(new RegExp(` ws +User ${id} \\(via test-1\\) says: hi over ws$`));
      expect(await watcher.next((f) => f.includes("hi over ws"))).to.equal(`User ${id} (via test-1) says: hi over ws`);
    });

    it("--ws --id ID connects to /ws/ID and gets its lines echoed", async () => {
      const t = await app();
      const c = cli([t.url, "--ws", "--id", "bob"]);
      await c.next(/ info +connected to test-1 as bob$/);
      c.type("echo me");
      await c.next(/ ws +Server echo: echo me$/);
    });

    it("--ws --json asks for JSON frames and prints them", async () => {
      const t = await app();
      const c = cli([t.url, "--ws", "--json"]);
      const welcome = jsonAfterTag(await c.next(/ ws +\{"type":"welcome"/), "ws");
      expect(welcome.data).to.include({ instance: "test-1" });
      c.type("json frame");
      const frame = jsonAfterTag(await c.next(/ ws +\{"type":"message"/), "ws");
      expect(frame.data).to.include({ text: "json frame", from: welcome.data.clientId, origin: "ws" });
    });
  });

  describe("leaving", () => {
    for (const ws of [false, true]) {
      it(`exits 0 when stdin ends, after sending what was typed (${ws ? "/ws" : "Socket.IO"})`, async () => {
        const t = await app();
        const watcher = await ioClient(t.url, "watcher");
        // Typed and closed at once, before the connection is even up: `echo hi | npm run client`.
        const c = cli(ws ? [t.url, "--ws"] : [t.url, "--id", "piped"]);
        c.type("last words");
        c.end();
        expect(await c.exited).to.deep.equal({ code: 0, signal: null });
        expect(await watcher.next("message")).to.include({ text: "last words" });
      });
    }

    it("runs lines piped in before the connection is up in order: /join, to the room, /leave, to all", async () => {
      const t = await app();
      const member = await ioClient(t.url, "member");
      await member.socket.emitWithAck("join", "blue");
      const outsider = await ioClient(t.url, "outsider");
      const c = cli([t.url, "--id", "scripted"]);
      for (const line of ["/join blue", "in blue", "/leave blue", "to all"]) c.type(line);
      c.end();
      expect(await member.next("message", (m) => m.from === "scripted")).to.include({ text: "in blue", room: "blue" });
      // The outsider's first message from the script is the one after /leave.
      expect(await outsider.next("message", (m) => m.from === "scripted")).to.include({ text: "to all" });
      expect(outsider.inbox.all((e) => e.event === "message" && (e.args[0] as { from: string }).from === "scripted")).to.have.length(1);
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
      expect(c.lines.all((l) => / info +(joined|left) #blue$/.test(l)).map((l) => l.replace(/.* info +/, ""))).to.deep.equal(["joined #blue", "left #blue"]);
    });

    it("exits 0 on /quit", async () => {
      const t = await app();
      const c = cli([t.url]);
      await c.next(/connected to/);
      c.type("/quit");
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
    });

    it("exits 0 on SIGINT (Ctrl+C), and the server sees the client leave", async () => {
      const t = await app();
      const c = cli([t.url, "--id", "leaver"]);
      await c.next(/connected to/);
      const listed = (await (await fetch(`${t.url}/clients`)).json()) as { clients: string[] };
      expect(listed.clients).to.include("leaver");
      process.kill(c.pid, "SIGINT");
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
      await t.logs.next((r) => r.msg === "disconnected" && r.clientId === "leaver", 5_000, "the server's disconnect log");
    });
  });

  describe("reconnection", () => {
    /** Drains `t` with a second signal (forced close now) and starts `test-2` on the same port once it is gone. */
    const forceCloseAndReplace = async (t: TestApp): Promise<TestApp> => {
      const { port } = t.app.server.address() as AddressInfo;
      t.app.shutdown.signal("SIGTERM");
      t.app.shutdown.signal("SIGTERM");
      await t.app.shutdown.done;
      return app({ PORT: String(port), INSTANCE_ID: "test-2" });
    };

    it("Socket.IO: after a drain and a forced close it reconnects to the replacement and re-joins its room", async () => {
      const t = await app();
      const c = cli([t.url, "--id", "alice", "--room", "red"]);
      await c.next(/connected to test-1 as alice$/);
      await c.next(/ info +joined #red$/);
      const replacement = forceCloseAndReplace(t);
      await c.next(/ draining +test-1 is draining/);
      await c.next(/ info +disconnected \(transport close\); reconnecting…$/);
      const t2 = await replacement;
      await c.next(/ info +connected to test-2 as alice \(was test-1\)$/, 15_000);
      await c.next(/ info +re-joined #red$/);
      // The room works on the new instance.
      const member = await ioClient(t2.url, "member");
      await member.socket.emitWithAck("join", "red");
      c.type("back in red");
      expect(await member.next("message", (m) => m.from === "alice")).to.include({ text: "back in red", room: "red", instance: "test-2" });
    });

    it("Socket.IO: keeps retrying while the server drains (503 on new sessions) and says so", async () => {
      const t = await app();
      // A client that stays keeps the draining instance up.
      await ioClient(t.url, "holder");
      t.app.shutdown.begin("test");
      const c = cli([t.url, "--id", "late"]);
      await c.next(/ info +cannot connect \(.+\); socket\.io-client retries…$/);
      await c.next(/ info +reconnecting… \(attempt 1\)$/);
      await c.next(/ info +reconnecting… \(attempt 2\)$/);
      c.type("/quit");
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
    });

    it("Socket.IO: after a DRAINING refusal from the namespace middleware it reconnects with back-off", async () => {
      // socket.io-client does not retry a middleware refusal by itself. The fake
      // refuses the first attempt as a draining instance would, then accepts.
      const server = await startDrainingServer({ refusals: 1, instance: "fake" });
      defer(() => server.close());
      const c = cli([server.url, "--id", "dave"]);
      const line = await c.next(/ info +server is draining; reconnecting in [\d.]+s…$/);
      const delay = Number(/in ([\d.]+)s/.exec(line)![1]);
      expect(delay).to.be.within(0.2, 0.5); // the first back-off step: 250-500 ms
      await c.next(/ info +connected to fake as dave$/);
      expect(server.attempts()).to.equal(2);
    });

    it("/ws: after a forced close (1001) it reconnects to the replacement", async () => {
      const t = await app();
      const c = cli([t.url, "--ws", "--id", "wsbob"]);
      await c.next(/ info +connected to test-1 as wsbob$/);
      const replacement = forceCloseAndReplace(t);
      await c.next(/ info +closed \(1001, server shutting down\); reconnecting in [\d.]+s…$/);
      await replacement;
      await c.next(/ info +connected to test-2 as wsbob$/, 15_000);
      c.type("still here");
      await c.next(/ ws +Server echo: still here$/);
    });

    it("/ws: a refused upgrade (503 while draining) is retried, and says so", async () => {
      const t = await app();
      await ioClient(t.url, "holder");
      t.app.shutdown.begin("test");
      const c = cli([t.url, "--ws"]);
      await c.next(/ info +upgrade refused with 503 \(.*DRAINING.*\); reconnecting in [\d.]+s…$/);
      await c.next(/ info +upgrade refused with 503 .*; reconnecting in [\d.]+s…$/);
      c.end();
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
    });
  });

  describe("example.ts", () => {
    it("connects, joins a room, sends with an ack, prints what comes back, and exits 0", async () => {
      const t = await app();
      const e = spawnScript("client-demo/example.ts", [t.url]);
      await e.next(/^connected to test-1 as example-\d+$/);
      await e.next(/^join ack: \{"ok":true,"room":"example"\}$/);
      await e.next(/^message ack: \{"ok":true\}$/);
      await e.next(/^received in #example from example-\d+ via test-1: hello from example\.ts$/);
      expect(await e.exited).to.deep.equal({ code: 0, signal: null });
    });

    it("exits 1 with a message when it cannot connect", async () => {
      const t = await app();
      const { port } = t.app.server.address() as AddressInfo;
      await t.close();
      const e = spawnScript("client-demo/example.ts", [`http://127.0.0.1:${port}`]);
      await e.next(/^example failed: /);
      expect(await e.exited).to.deep.equal({ code: 1, signal: null });
    });
  });
});
