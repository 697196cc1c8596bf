/**
 * Interactive terminal client for ws-broadcast-service.
 *
 *   npm run client -- [url] [--ws] [--id ID] [--room R] [--json] [--token JWT | --token-file PATH]
 *
 * Socket.IO mode (default) speaks the page's protocol; `--ws` is a plain
 * WebSocket on /ws (broadcast) or /ws/<id> (echo). Each line typed is sent;
 * everything received is printed as `[HH:MM:SS] tag text`. It reconnects by
 * itself when an instance drains or closes it, and leaves cleanly (exit 0) on
 * Ctrl+C, /quit or the end of stdin.
 */
import { readFileSync } from "node:fs";
import readline from "node:readline";
import { parseArgs } from "node:util";
import { type Socket, io } from "socket.io-client";
import WebSocket from "ws";
import type {
  DomainEvent,
  Ack as ServerAck,
  ClientToServerEvents,
  Notification,
  ServerToClientEvents,
  Welcome,
  WsServerFrame,
} from "ws-broadcast-service/protocol";
import { renderClosing, renderEcho, renderExpiring, renderLeft, renderText, renderWelcome } from "../server/realtime/ws-frames.js";

const USAGE = `usage: npm run client -- [url] [--ws] [--id ID] [--room R] [--json] [--token JWT | --token-file PATH]

  url          server or nginx address (default http://127.0.0.1:8000)
  --ws         plain WebSocket on <url>/ws instead of Socket.IO (/ws/<ID> with --id: echo)
  --id ID      client id to connect as (default: the server picks one)
  --room R     Socket.IO only: join room R (again after reconnects) and send typed lines to it
  --json       print raw JSON payloads (with --ws: ask for ?format=json frames)
  --token JWT  client token, when the server requires one
  --token-file PATH   read the token from PATH on every (re)connect and when the server says it expires
               (a fresh one written there is sent in-band: no reconnect)
  -h, --help   show this help

Type a line to send it. Socket.IO commands: /join R (join, and send to R from now on),
/leave R (leave; if it was the target, send to everyone again), /status, /quit.
With --ws: /quit. Ctrl+C or the end of input also quits.`;

const DEFAULT_URL = "http://127.0.0.1:8000";
const ACK_TIMEOUT_MS = 5_000;
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 10_000;
/** After a reconnect our id may still be held, for a moment, by the instance we left. */
const DUPLICATE_RETRIES = 8;

/** The server's answer, or ours when it gave none in time. */
type Ack = ServerAck<{ room?: string }> | { ok: false; error: string; code?: undefined };

interface Options {
  url: URL;
  ws: boolean;
  id: string | undefined;
  room: string | undefined;
  json: boolean;
  /** The client token now (the file's, read again each time), or undefined. */
  token: () => string | undefined;
}

/** Parses argv; answers the options, "help", or an error message. */
const CLI_OPTIONS = {
  ws: { type: "boolean", default: false },
  id: { type: "string" },
  room: { type: "string" },
  json: { type: "boolean", default: false },
  token: { type: "string" },
  "token-file": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const;

function parse(argv: string[]): Options | "help" | string {
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; strict: true; options: typeof CLI_OPTIONS }>>;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: CLI_OPTIONS });
  } catch (err) {
    return (err as Error).message;
  }
  const { values, positionals } = parsed;
  if (values.help) return "help";
  if (positionals.length > 1) return `expected at most one url, got ${positionals.length} arguments`;
  let url: URL;
  try {
    url = new URL(positionals[0] ?? DEFAULT_URL);
  } catch {
    return `not a url: ${positionals[0]}`;
  }
  if (!["http:", "https:", "ws:", "wss:"].includes(url.protocol)) return `url must be http(s):// or ws(s)://, got ${url.protocol}`;
  if (values.id === "") return "--id must not be empty";
  if (values.room === "") return "--room must not be empty";
  if (values.ws && values.room !== undefined) return '--room works with Socket.IO only (with --ws, send {"type":"join"} frames)';
  if (values.token !== undefined && values["token-file"] !== undefined) return "--token and --token-file: give one";
  const file = values["token-file"];
  const fixed = values.token;
  const token = file
    ? () => {
        try {
          return readFileSync(file, "utf8").trim() || undefined;
        } catch {
          return undefined;
        }
      }
    : () => fixed;
  return { url, ws: values.ws, id: values.id, room: values.room, json: values.json, token };
}

// ------------------------------------------------------------------ output

const tty = Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
const paint = (code: number, s: string) => (tty && code !== 0 ? `\x1b[${code}m${s}\x1b[0m` : s);
const TAG_COLOURS: Record<string, number> = { msg: 0, info: 36, status: 33, periodic: 90, draining: 35, error: 31, ws: 0 };

const pad2 = (n: number) => String(n).padStart(2, "0");
const clock = (d = new Date()) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;

let rl: readline.Interface | undefined;

/** One output line, `[HH:MM:SS] tag text`; on a terminal it keeps the half-typed input below it. */
function print(tag: string, text: string): void {
  const line = `${paint(90, `[${clock()}]`)} ${paint(TAG_COLOURS[tag] ?? 0, tag.padEnd(8))} ${text}`;
  if (tty && rl) {
    readline.clearLine(process.stdout, 0);
    readline.cursorTo(process.stdout, 0);
    process.stdout.write(`${line}\n`);
    rl.prompt(true);
  } else {
    process.stdout.write(`${line}\n`);
  }
}

/** Exponential back-off with jitter: half the ceiling plus a random half. */
function backoff(attempt: number): number {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/**
 * Typed lines wait here while there is no usable connection (still connecting,
 * re-joining rooms, or reconnecting) and go out in order once there is.
 */
class Outbox {
  readonly #items: (() => void)[] = [];
  readonly #idle = new Set<() => void>();
  #open = false;

  /** Runs `send` now if the connection is usable, else once it is. */
  push(send: () => void): void {
    this.#items.push(send);
    this.#flush();
  }

  set open(value: boolean) {
    this.#open = value;
    this.#flush();
  }

  /** Resolves once everything queued has been sent, or after `timeoutMs` (we may never reconnect). */
  drained(timeoutMs: number): Promise<void> {
    if (this.#items.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#idle.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#idle.add(done);
    });
  }

  #flush(): void {
    while (this.#open && this.#items.length > 0) this.#items.shift()!();
    if (this.#items.length === 0) for (const done of [...this.#idle]) done();
  }
}

function describeNotification(n: Notification): [tag: string, text: string] {
  switch (n.type) {
    case "status": {
      const list = n.instances.map((i) => `${i.id} (${i.clients}${i.draining ? ", draining" : ""})`).join(", ");
      return ["status", `requested by ${n.requestedBy}: ${n.clients} client(s) on ${n.instances.length} instance(s): ${list}${n.partial ? " [partial]" : ""}`];
    }
    case "periodic":
      return ["periodic", `from ${n.instance} (every ${n.intervalSec}s)`];
    case "draining":
      return ["draining", `${n.instance} is draining; staying connected until it closes, then moving to a live instance`];
    default:
      return ["info", JSON.stringify(n)];
  }
}

// --------------------------------------------------------------- clients

/** What a transport offers the input loop. */
interface Client {
  /** Handles one typed line (text or /command). */
  line(text: string): void;
  /** Resolves when what was typed has been sent (bounded). */
  settle(): Promise<void>;
  /** Closes for good; resolves when the connection is closed (bounded). */
  close(): Promise<void>;
}

/** Socket.IO: socket.io-client reconnects after transport errors; we retry what it does not (DRAINING). */
function socketIoClient(opts: Options, fail: (message: string) => void): Client {
  const rooms = new Set<string>(opts.room ? [opts.room] : []);
  const place = new Place();
  const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(opts.url.href, {
    // Called on every (re)connection: where we are in the history, and our rooms, so nothing is missed.
    // The token too: after TOKEN_EXPIRED socket.io-client reconnects by itself, with whatever token is current.
    auth: (cb) => {
      const token = opts.token();
      sentToken = token;
      cb({ ...(opts.id ? { clientId: opts.id } : {}), ...(token ? { token } : {}), ...place.resume(), rooms: [...rooms] });
    },
    reconnectionDelay: RETRY_BASE_MS,
    reconnectionDelayMax: 5_000,
  });
  /** Where typed lines go: the last room joined, or everyone. */
  let target = opts.room;
  /** The token the connection holds (the handshake's or the last refresh's). */
  let sentToken: string | undefined;
  const outbox = new Outbox();
  const pending = new Set<Promise<unknown>>();
  let lastInstance: string | undefined;
  let connectedOnce = false;
  let attempt = 0;
  let retry: NodeJS.Timeout | undefined;
  let closing = false;

  /** Emits with an ack and a time limit; always resolves to an Ack. */
  const request = (send: () => Promise<Ack>): Promise<Ack> => {
    const p = send().catch((): Ack => ({ ok: false, error: `no answer within ${ACK_TIMEOUT_MS / 1000}s` }));
    pending.add(p);
    void p.finally(() => pending.delete(p));
    return p;
  };
  const withAck = () => socket.timeout(ACK_TIMEOUT_MS);

  const join = async (room: string, again = false) => {
    const ack = await request(() => withAck().emitWithAck("join", room));
    if (ack.ok) print("info", `${again ? "re-joined" : "joined"} #${room}`);
    else {
      rooms.delete(room);
      if (target === room) target = undefined;
      print("error", `could not join #${room}: ${ack.error}`);
    }
  };

  const scheduleRetry = (why: string) => {
    const delay = backoff(attempt++);
    print("info", `${why}; reconnecting in ${(delay / 1000).toFixed(1)}s…`);
    retry = setTimeout(() => socket.connect(), delay);
  };

  socket.on("connect", async () => {
    attempt = 0;
    connectedOnce = true;
    // Rooms live on the instance: a new session (maybe elsewhere) must join them
    // again, before what was typed meanwhile goes out (it may be for a room).
    const again = lastInstance !== undefined;
    await Promise.all([...rooms].map((room) => join(room, again)));
    outbox.open = socket.connected;
  });

  socket.on("welcome", (w) => {
    if (opts.json) print("welcome", JSON.stringify(w));
    const moved = lastInstance !== undefined && lastInstance !== w.instance ? ` (was ${lastInstance})` : "";
    print("info", `connected to ${w.instance} as ${w.clientId}${moved}`);
    place.welcome(w);
    lastInstance = w.instance;
  });

  socket.on("message", (m) => {
    place.seen(m.offset);
    if (opts.json) return print("message", JSON.stringify(m));
    print("msg", `${m.from} (via ${m.instance})${m.room !== undefined ? ` in #${m.room}` : ""}: ${m.text}`);
  });

  socket.on("notification", (n) => {
    if (n.type === "status") place.seen(n.offset);
    if (opts.json) return print("notification", JSON.stringify(n));
    print(...describeNotification(n));
  });

  // The token expires soon: a fresh one (from --token-file) goes in-band.
  socket.on("expiring", async (n) => {
    const token = opts.token();
    if (!token || token === sentToken) return print("info", `the client token expires at ${n.expiresAt}; write a fresh one to --token-file`);
    const ack = await socket
      .timeout(ACK_TIMEOUT_MS)
      .emitWithAck("refresh", token)
      .catch(() => ({ ok: false as const, error: "no answer" }));
    if (ack.ok) sentToken = token;
    print(ack.ok ? "info" : "error", ack.ok ? "token refreshed" : `token not refreshed: ${ack.error}`);
  });
  socket.on("left", (n) => {
    rooms.delete(n.room);
    print("info", `left #${n.room}: ${n.error}`);
  });
  socket.on("closing", (e) => print("info", `the server closes this connection: ${e.error} (${e.code})`));

  socket.on("disconnect", (reason) => {
    outbox.open = false;
    if (closing) return;
    if (socket.active) return print("info", `disconnected (${reason}); reconnecting…`);
    // "io server disconnect": the server let us go on purpose; socket.io-client will not retry.
    scheduleRetry(`disconnected (${reason})`);
  });

  socket.on("connect_error", (err: Error & { data?: { code?: string } }) => {
    if (closing) return;
    const code = err.data?.code;
    // Transport errors (a 503 from a draining instance, a refused TCP connection): socket.io-client retries.
    if (socket.active) return print("info", `cannot connect (${err.message}); socket.io-client retries…`);
    if (code === "DRAINING") return scheduleRetry("server is draining");
    if (code === "DUPLICATE_CLIENT_ID" && connectedOnce && attempt < DUPLICATE_RETRIES) {
      return scheduleRetry(`${err.message} (still held by the instance we left?)`);
    }
    fail(`refused: ${err.message}${code ? ` (${code})` : ""}`);
  });

  socket.io.on("reconnect_attempt", (n) => print("info", `reconnecting… (attempt ${n})`));

  const help = () => print("info", `commands: /join R, /leave R, /status, /quit; anything else is sent to ${target ? `#${target}` : "everyone"}`);

  /** One typed line, run once there is a usable session, in the order typed. */
  const handle = (text: string): void => {
    if (text.startsWith("/")) {
      const [cmd, arg] = text.trim().split(/\s+/, 2);
      switch (cmd) {
        case "/join":
          if (!arg) return print("error", "usage: /join ROOM");
          target = arg;
          print("info", `typed lines go to #${arg}`);
          if (rooms.has(arg)) return;
          rooms.add(arg);
          void join(arg);
          return;
        case "/leave":
          if (!arg) return print("error", "usage: /leave ROOM");
          rooms.delete(arg);
          if (target === arg) {
            target = undefined;
            print("info", "typed lines go to everyone");
          }
          void request(() => withAck().emitWithAck("leave", arg)).then((ack) =>
            print(ack.ok ? "info" : "error", ack.ok ? `left #${arg}` : `could not leave #${arg}: ${ack.error}`),
          );
          return;
        case "/status":
          void request(() => withAck().emitWithAck("status")).then((ack) => {
            if (!ack.ok) print("error", `status: ${ack.error}`);
          });
          return;
        default:
          return help();
      }
    }
    const payload = target ? { text, room: target } : text;
    // Socket.IO keeps the order of one connection's packets, so a /join typed just before has taken effect.
    void request(() => withAck().emitWithAck("message", payload)).then((ack) => {
      if (!ack.ok) print("error", `not sent: ${ack.error}${ack.code ? ` (${ack.code})` : ""}`);
    });
  };

  return {
    line(text) {
      if (text !== "") outbox.push(() => handle(text));
    },
    async settle() {
      await outbox.drained(ACK_TIMEOUT_MS);
      await Promise.allSettled([...pending]);
    },
    async close() {
      closing = true;
      clearTimeout(retry);
      socket.disconnect();
    },
  };
}

/**
 * A plain WebSocket on /ws or /ws/<id>; reconnects on 1001/1006 and on a
 * refused (503) upgrade. It asks for JSON frames (offsets to recover with)
 * and prints them as the service's text lines unless --json.
 */
function wsClient(opts: Options, fail: (message: string) => void): Client {
  const target = new URL(opts.url.href);
  target.protocol = target.protocol === "https:" || target.protocol === "wss:" ? "wss:" : "ws:";
  target.pathname = `${target.pathname.replace(/\/+$/, "")}/ws${opts.id ? `/${encodeURIComponent(opts.id)}` : ""}`;
  target.searchParams.set("format", "json");
  const place = new Place();

  let ws: WebSocket | undefined;
  let retry: NodeJS.Timeout | undefined;
  let attempt = 0;
  let connectedOnce = false;
  let closing = false;
  const outbox = new Outbox();

  const open = () => {
    const url = new URL(target);
    const token = opts.token();
    if (token) url.searchParams.set("token", token);
    const resume = place.resume();
    if (resume.offset && resume.epoch) {
      url.searchParams.set("since", resume.offset);
      url.searchParams.set("epoch", resume.epoch);
    }
    const socket = new WebSocket(url, { handshakeTimeout: 10_000 });
    ws = socket;
    let refused: { status: number; body: string } | undefined;
    let lastError = "";

    socket.on("open", () => {
      attempt = 0;
      connectedOnce = true;
      outbox.open = true;
    });
    socket.on("message", (data, isBinary) => {
      if (isBinary) return print("ws", `<binary ${(data as Buffer).length} bytes>`);
      const raw = data.toString();
      const frame = parseFrame(raw);
      if (!frame) return print("ws", raw);
      if (frame.type === "welcome") place.welcome(frame.data);
      else if (frame.type === "message") place.seen(frame.data.offset);
      else if (frame.type === "expiring") {
        // A fresh token (from --token-file) goes in-band.
        const fresh = opts.token();
        if (fresh && fresh !== token) socket.send(JSON.stringify({ type: "refresh", token: fresh }));
      } else if (frame.type === "notification" && frame.data.type === "status") place.seen(frame.data.offset);
      // Frames without data (service B's duplicate-id refusal) print as they came.
      print("ws", opts.json || typeof frame.data !== "object" || frame.data === null ? raw : frameText(frame));
      if (frame.type === "welcome") print("info", `connected to ${frame.data.instance} as ${frame.data.clientId}`);
    });
    socket.on("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => {
        refused = { status: res.statusCode ?? 0, body };
        socket.terminate(); // ends the handshake; "close" follows
      });
    });
    socket.on("error", (err) => (lastError = err.message));
    socket.on("close", (code, reason) => {
      outbox.open = false;
      if (closing) return;
      if (refused) {
        // 503: the instance drains (nginx had no live one either); anything else is final.
        if (refused.status === 503) return scheduleRetry(`upgrade refused with 503 (${refused.body.trim() || "draining"})`);
        return fail(`upgrade refused with ${refused.status}: ${refused.body.trim()}`);
      }
      const why = reason.toString() || lastError || "no reason";
      // 4001: the token expired; with --token-file a fresh one is read on the reconnect.
      if (code === 1001 || code === 1006 || code === 4001) return scheduleRetry(`closed (${code}, ${why})`);
      if (code === 1008 && connectedOnce && attempt < DUPLICATE_RETRIES) return scheduleRetry(`closed (${code}, ${why})`);
      fail(`closed by the server (${code}, ${why})`);
    });
  };

  const scheduleRetry = (why: string) => {
    const delay = backoff(attempt++);
    print("info", `${why}; reconnecting in ${(delay / 1000).toFixed(1)}s…`);
    retry = setTimeout(open, delay);
  };

  open();
  return {
    line(text) {
      if (text.trim() === "/help" || (text.startsWith("/") && text.trim() !== "/quit")) {
        return print("info", "with --ws every line is sent as it is; /quit leaves");
      }
      if (text === "") return;
      outbox.push(() => ws?.send(text));
    },
    settle() {
      // Wait for a (re)connection to send what was typed, but not for ever.
      return outbox.drained(ACK_TIMEOUT_MS);
    },
    close() {
      closing = true;
      clearTimeout(retry);
      const socket = ws;
      if (!socket || socket.readyState === WebSocket.CLOSED) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          socket.terminate();
          resolve();
        }, 2_000);
        socket.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
        if (socket.readyState === WebSocket.CONNECTING) socket.terminate();
        else socket.close(1000, "bye");
      });
    },
  };
}

/** A /ws JSON frame, or undefined. */
function parseFrame(raw: string): WsServerFrame | undefined {
  try {
    const parsed = JSON.parse(raw) as WsServerFrame;
    return typeof parsed === "object" && parsed !== null && typeof parsed.type === "string" ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** A frame as the service's text mode shows it. */
function frameText(frame: WsServerFrame): string {
  switch (frame.type) {
    case "welcome":
      return renderWelcome(frame.data);
    case "message":
    case "notification":
      return renderText({ event: frame.type, data: frame.data } as DomainEvent);
    case "echo":
      return renderEcho(frame.data.text);
    case "error":
      return `Error: ${frame.data.error}`;
    case "ack":
      return `ok ${JSON.stringify(frame.data)}`;
    case "expiring":
      return renderExpiring(frame.data);
    case "left":
      return renderLeft(frame.data);
    case "closing":
      return renderClosing(frame.data);
  }
}

/**
 * Where this client is in the service's history: the epoch of its last
 * welcome and the offset of the last broadcast it got. Sent back on every
 * reconnect; the welcome then says whether everything missed was replayed.
 */
class Place {
  #epoch: string | undefined;
  #offset: string | undefined;
  #asked = false;

  resume(): { offset?: string; epoch?: string } {
    this.#asked = this.#offset !== undefined;
    return this.#offset && this.#epoch ? { offset: this.#offset, epoch: this.#epoch } : {};
  }

  welcome(w: Welcome): void {
    if (this.#asked) {
      if (w.recovered) print("info", `recovered: ${w.replayed} missed broadcast(s) replayed`);
      else print("error", `recovery partial: broadcasts may be missing (history trimmed, restarted or interrupted); ${w.replayed} replayed`);
    }
    this.#asked = false;
    this.#epoch = w.epoch;
    if (w.offset) this.#offset = w.offset;
  }

  seen(offset: string | undefined): void {
    if (offset) this.#offset = offset;
  }
}

// ------------------------------------------------------------------- main

function main(): void {
  const opts = parse(process.argv.slice(2));
  if (opts === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (typeof opts === "string") {
    process.stderr.write(`client: ${opts}\n\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }

  let quitting: Promise<void> | undefined;
  /** Leaves cleanly: sends what was typed, closes, exits with `code`. */
  const quit = (code: number): Promise<void> =>
    (quitting ??= (async () => {
      await client.settle();
      await client.close();
      rl?.close();
      process.exitCode = code;
      // Everything is closed, so the process should end by itself; make sure it does.
      setTimeout(() => process.exit(code), 1_000).unref();
    })());
  const fail = (message: string) => {
    print("error", message);
    void quit(1);
  };

  print("info", `connecting to ${opts.url.origin}${opts.ws ? " (/ws)" : " (Socket.IO)"}${opts.id ? ` as ${opts.id}` : ""}…`);
  const client = opts.ws ? wsClient(opts, fail) : socketIoClient(opts, fail);

  rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty });
  if (tty) {
    rl.setPrompt("> ");
    rl.prompt();
  }
  rl.on("line", (line) => {
    if (line.trim() === "/quit") return void quit(0);
    client.line(line);
    if (tty) rl?.prompt();
  });
  // End of input (Ctrl+D, a closed pipe) and Ctrl+C leave cleanly.
  rl.on("close", () => void quit(0));
  rl.on("SIGINT", () => void quit(0));
  process.on("SIGINT", () => void quit(0));
  process.on("SIGTERM", () => void quit(0));
}

main();
