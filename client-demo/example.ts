/**
 * A small socket.io-client example for ws-broadcast-service:
 * connect, wait for `welcome`, join a room, send a message to it, read it back,
 * disconnect.
 *
 *   npm run example -- [url]        (node --import tsx client-demo/example.ts [url])
 *
 * `url` is the server or nginx address (default http://127.0.0.1:8000).
 * With client tokens on, set WBS_TOKEN (a JWT whose `wbs.read` and `wbs.send`
 * allow the room "example").
 */
import { type Socket, io } from "socket.io-client";
import type { ClientToServerEvents, ServerToClientEvents, Welcome } from "ws-broadcast-service/protocol";

// The service's own protocol types: event names and payloads are checked.
// From another project: import type { ... } from "ws-broadcast-service/protocol".
type ServerToClient = ServerToClientEvents;
type ClientToServer = ClientToServerEvents;

const url = process.argv[2] ?? "http://127.0.0.1:8000";
const room = "example";

/** Resolves with the first `event` payload that matches, or rejects after `ms`. */
function next<E extends keyof ServerToClient>(
  socket: Socket<ServerToClient, ClientToServer>,
  event: E,
  match: (payload: Parameters<ServerToClient[E]>[0]) => boolean = () => true,
  ms = 5_000,
): Promise<Parameters<ServerToClient[E]>[0]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, listener as never);
      reject(new Error(`no "${event}" within ${ms} ms`));
    }, ms);
    timer.unref(); // a deadline never keeps the process alive by itself
    const listener = (payload: Parameters<ServerToClient[E]>[0]) => {
      if (!match(payload)) return;
      clearTimeout(timer);
      socket.off(event, listener as never);
      resolve(payload);
    };
    socket.on(event, listener as never);
  });
}

// Where we are in the service's history: the welcome's epoch and the offset of the
// last broadcast we got. `auth` as a function is called on every (re)connection,
// so a reconnect asks for what was missed meanwhile (and the rooms to be in again).
const place: { epoch?: string; offset?: string } = {};
const rooms: string[] = [];
// Where a fresh client token comes from: a real app asks its own backend
// (fetch("/api/realtime-token")). Called on every (re)connection and when the
// server says the token expires soon.
const freshToken = async (): Promise<string | undefined> => process.env.WBS_TOKEN;
// `auth.clientId` is optional (the server picks one when absent). No reconnection:
// an example should fail fast; a long-lived client keeps the default (on).
const socket: Socket<ServerToClient, ClientToServer> = io(url, {
  auth: (cb) => void freshToken().then((token) => cb({ clientId: `example-${process.pid}`, ...(token ? { token } : {}), ...place, rooms })),
  reconnection: false,
});
socket.on("welcome", (w) => {
  // recovered: false after a reconnect means broadcasts may be missing: reload your state.
  if (place.offset !== undefined) console.log(w.recovered ? `recovered ${w.replayed} missed broadcast(s)` : "recovery partial: reload state");
  place.epoch = w.epoch;
  place.offset = w.offset;
});
socket.on("message", (m) => {
  if (m.offset) place.offset = m.offset;
});
// Path one: refresh in-band before the deadline (same user; no reconnect, nothing lost).
// Path two, should that fail: the server closes with TOKEN_EXPIRED and the reconnect's
// `auth` above fetches a fresh token.
socket.on("expiring", async () => {
  const token = await freshToken();
  if (token) console.log("refresh:", JSON.stringify(await socket.timeout(5_000).emitWithAck("refresh", token)));
});

try {
  // The listeners are in place before the connection opens (io() connects asynchronously).
  // A refusal (or no answer within the client's 20 s connect timeout) is a connect_error.
  const welcome = await new Promise<Welcome>((resolve, reject) => {
    socket.once("welcome", resolve);
    socket.once("connect_error", reject);
  });
  console.log(`connected to ${welcome.instance} as ${welcome.clientId}`);

  // Acks answer { ok: true, ... } or { ok: false, error, code }; timeout() bounds the wait.
  const joined = await socket.timeout(5_000).emitWithAck("join", room);
  if (joined.ok) rooms.push(room);
  console.log("join ack:", JSON.stringify(joined));
  if (!joined.ok) throw new Error(`join failed: ${joined.error}`);

  // Listen first, then send: the server echoes room messages to every member, us included.
  const echoed = next(socket, "message", (m) => m.room === room && m.from === welcome.clientId);
  const sent = await socket.timeout(5_000).emitWithAck("message", { text: "hello from example.ts", room });
  console.log("message ack:", JSON.stringify(sent));
  if (!sent.ok) throw new Error(`message refused: ${sent.error} (${sent.code})`);

  const m = await echoed;
  console.log(`received in #${m.room} from ${m.from} via ${m.instance}: ${m.text}`);
} catch (err) {
  console.error("example failed:", (err as Error).message);
  process.exitCode = 1;
} finally {
  // With the socket closed nothing is left to keep the process alive.
  socket.disconnect();
}
