import fc from "fast-check";
import { type RequestSpec, encodeFrame } from "./raw-http.js";

/**
 * fast-check arbitraries for hostile clients: raw HTTP requests (targets,
 * methods, header sets) and, over upgraded connections, WebSocket frames.
 * Everything is plain data (strings, numbers, byte arrays) so a failing case
 * prints as what was sent. `SELF` stands for the instance's own host:port.
 */

export const SELF = "@self";

type Headers = [string, string][];

/** One raw HTTP request, and what to do with the connection if it upgrades. */
export interface HttpCase {
  method: string;
  target: string;
  version: string;
  headers: Headers;
  body: string;
  /** How the body is framed: none, Content-Length, chunked, or both (a smuggling attempt). */
  framing: "none" | "length" | "chunked" | "both";
  /** Byte offsets at which the request is cut into separate TCP writes. */
  cuts: number[];
  /** After a 101: drop the socket, send a close frame, or half-close (FIN). */
  after101: "destroy" | "close" | "end";
}

/** One frame a client sends after a successful upgrade. */
export type FrameSpec =
  | { kind: "text"; text: string }
  | { kind: "json"; json: string }
  | { kind: "oversize"; extra: number }
  | { kind: "bad-utf8"; bytes: number[] }
  | { kind: "binary"; bytes: number[] }
  | { kind: "ping"; payload: string }
  | { kind: "ping-oversize" }
  | { kind: "pong" }
  | { kind: "fragmented"; text: string; at: number }
  | { kind: "orphan-continuation"; text: string }
  | { kind: "unmasked"; text: string }
  | { kind: "rsv"; rsv: number; text: string }
  | { kind: "reserved-opcode"; opcode: number }
  | { kind: "close"; code: number; reason: string }
  | { kind: "engine-packet"; packet: string };

/** One upgraded connection of a frame case. */
export interface WsConnCase {
  target: string;
  frames: FrameSpec[];
  cuts: number[];
  /** drop the socket; send close 1000 and wait for the server's close; or half-close (FIN) and wait. */
  end: "destroy" | "close" | "end";
}

const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });
const absent: fc.Arbitrary<Headers> = fc.constant([]);
const header = (name: string, value: fc.Arbitrary<string>): fc.Arbitrary<Headers> => value.map((v) => [[name, v]] as Headers);

const validId = fc.stringMatching(/^[A-Za-z0-9_.-]{1,64}$/);
/**
 * A few ids many cases share, so duplicates and releases meet. Not "." or
 * "..": valid ids, but a URL path normalises them away, so /ws/. is /ws/.
 */
const pooledId = fc.oneof(
  w(3, fc.constantFrom("alice", "bob", "1")),
  w(
    1,
    validId.filter((id) => id !== "." && id !== ".."),
  ),
);
const unicode = (maxLength: number) => fc.string({ unit: "binary", maxLength });

const byte = fc.integer({ min: 0, max: 255 });
const hexDigit = fc.constantFrom(..."0123456789abcdefABCDEF");
/** One piece of a path segment: percent-encodings, good and malformed, raw unicode, plain characters. */
const pctPiece = fc.oneof(
  w(
    3,
    byte.map((b) => `%${b.toString(16).padStart(2, "0")}`),
  ),
  w(
    1,
    byte.map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`),
  ),
  w(
    1,
    hexDigit.map((h) => `%${h}`),
  ),
  w(1, fc.constant("%")),
  w(
    3,
    fc.constantFrom(
      "%ZZ",
      "%G0",
      "%0G",
      "%%",
      "%FF",
      "%E0%A4%A",
      "%C3%28",
      "%ED%A0%80",
      "%F4%90%80%80",
      "%C0%AF",
      "%E2%80%A8",
      "%00",
      "%2F",
      "%3F",
      "%23",
      "%25",
      "%61lice",
    ),
  ),
  w(
    2,
    unicode(3)
      .filter((s) => s.length > 0)
      .map(encodeURIComponent),
  ),
  w(
    1,
    unicode(3).filter((s) => s.length > 0),
  ),
  w(2, fc.stringMatching(/^[A-Za-z0-9_.-]{1,8}$/)),
);
const idSegment = fc.oneof(
  w(3, validId),
  w(
    5,
    fc.array(pctPiece, { minLength: 1, maxLength: 8 }).map((a) => a.join("")),
  ),
  w(
    1,
    fc.integer({ min: 65, max: 600 }).map((n) => "x".repeat(n)),
  ),
  w(1, fc.constantFrom("", ".", "..", "alice", "1", "%61lice", "a b", "a/b", "a?b")),
);
const wsQuery = fc.oneof(
  w(4, fc.constant("")),
  w(2, fc.constantFrom("?format=json", "?format=text", "?format=", "?format=json&format=text", "?", "?%", "?format=%FF", "?a=%ZZ&format=json")),
  w(
    1,
    fc.array(pctPiece, { maxLength: 4 }).map((a) => `?${a.join("")}`),
  ),
);
const wsTarget = fc.oneof(
  w(
    2,
    wsQuery.map((q) => `/ws${q}`),
  ),
  w(
    6,
    fc.tuple(idSegment, fc.constantFrom("", "/", "/extra", "//"), wsQuery).map(([id, tail, q]) => `/ws/${id}${tail}${q}`),
  ),
  w(1, fc.constantFrom("/ws/", "/WS", "/ws%2Falice", "/ws/../ws", "/./ws", "//ws", "/ws;x", "/ws#frag", "/wsx", "/ws\\alice")),
);

const engineParam = fc.oneof(
  w(
    1,
    fc.constantFrom("4", "3", "5", "", "x", "04").map((v) => `EIO=${v}`),
  ),
  w(
    1,
    fc.constantFrom("polling", "websocket", "webtransport", "", "flashsocket", "POLLING").map((v) => `transport=${v}`),
  ),
  w(
    2,
    fc
      .oneof(
        fc.constant(""),
        fc.stringMatching(/^[A-Za-z0-9_-]{1,30}$/),
        fc.stringMatching(/^[A-Za-z0-9_-]{20}$/).map((s) => `fz1.${s}`),
        fc.array(pctPiece, { maxLength: 4 }).map((a) => a.join("")),
      )
      .map((v) => `sid=${v}`),
  ),
  w(1, fc.constantFrom("b64=1", "t=NAbc", "j=0", "sid", "EIO", "=", "%", "%73id=", "sid[]=x", "&&")),
  w(
    1,
    fc.tuple(fc.array(pctPiece, { maxLength: 2 }), fc.array(pctPiece, { maxLength: 2 })).map(([k, v]) => `${k.join("")}=${v.join("")}`),
  ),
);
const engineTarget = fc
  .tuple(
    fc.oneof(w(8, fc.constant("/socket.io/")), w(1, fc.constantFrom("/socket.io", "/socket.io//", "/socket.io/x", "/SOCKET.IO/", "/socket.io/%"))),
    fc.option(fc.constantFrom("4", "3", "x", ""), { nil: undefined, freq: 6 }),
    fc.option(fc.constantFrom("polling", "websocket", "x", ""), { nil: undefined, freq: 6 }),
    fc.array(engineParam, { maxLength: 4 }),
  )
  .map(([path, eio, transport, extra]) => {
    const params = [...(eio === undefined ? [] : [`EIO=${eio}`]), ...(transport === undefined ? [] : [`transport=${transport}`]), ...extra];
    return `${path}?${params.join("&")}`;
  });

const apiTarget = fc.constantFrom(
  "/",
  "/clients",
  "/healthz",
  "/readyz",
  "/metrics",
  "/broadcast-to-all",
  "/index.html",
  "/../../etc/passwd",
  "/%2e%2e/%2e%2e/etc/passwd",
  "/..%2f..%2fetc/passwd",
  "/clients?x=%FF",
  "/%FF",
  "/%",
  "/?%",
);
const oddTarget = fc.oneof(
  w(
    3,
    fc.constantFrom(
      "//[",
      "http://[",
      "*",
      "http://127.0.0.1/ws",
      "http://evil/ws/alice",
      "https://[::1]/socket.io/?EIO=4&transport=polling",
      "//ws",
      "ws",
      "/ws%00",
      "/ws/%00",
      "/\\ws",
      "//",
      "/ /ws",
      "http://[::1",
      "//[::1]/ws",
      "%2Fws",
      "?",
    ),
  ),
  w(1, fc.string({ maxLength: 30 })),
  w(
    1,
    unicode(20).map((s) => `/${s}`),
  ),
  w(
    1,
    fc.integer({ min: 2_000, max: 20_000 }).map((n) => `/ws/${"a".repeat(n)}`),
  ),
);
const target = fc.oneof(w(6, wsTarget), w(4, engineTarget), w(1, apiTarget), w(2, oddTarget));

const method = fc.oneof(
  w(20, fc.constant("GET")),
  w(2, fc.constantFrom("POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH")),
  w(1, fc.constantFrom("CONNECT", "get", "G3T", "FOO", "GET GET", "", "TRACE")),
  w(1, fc.stringMatching(/^[A-Z]{1,10}$/)),
);
const version = fc.oneof(w(20, fc.constant("HTTP/1.1")), w(1, fc.constantFrom("HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "", "HTTPS/1.1", "http/1.1")));

const validKey = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString("base64"));
const badKey = fc.oneof(
  fc
    .uint8Array({ maxLength: 24 })
    .filter((b) => b.length !== 16)
    .map((b) => Buffer.from(b).toString("base64")),
  fc.string({ maxLength: 30 }),
  fc.constantFrom("", "dGhlIHNhbXBsZSBub25jZQ", "not-a-valid-key", "dGhlIHNhbXBsZSBub25jZQ==="),
);
const hostH = fc.oneof(
  w(12, header("Host", fc.constant(SELF))),
  w(1, absent),
  w(1, header("Host", fc.constantFrom("evil.com", "", "[", "localhost", "127.0.0.1:1", "a".repeat(300), "chat.example.com"))),
  w(
    1,
    fc.constant<Headers>([
      ["Host", SELF],
      ["Host", "evil.com"],
    ]),
  ),
);
const connectionH = fc.oneof(
  w(10, header("Connection", fc.constant("Upgrade"))),
  w(2, absent),
  w(
    2,
    header("Connection", fc.constantFrom("upgrade", "keep-alive, Upgrade", "close", "keep-alive", "Upgrade, HTTP2-Settings", "Upgrade, close", "", "Upgradex")),
  ),
);
const upgradeH = fc.oneof(
  w(10, header("Upgrade", fc.constant("websocket"))),
  w(2, absent),
  w(2, header("Upgrade", fc.constantFrom("WebSocket", "h2c", "websocket, h2c", "", "websocketx", "TLS/1.0", "HTTP/2.0"))),
);
const keyH = fc.oneof(
  w(10, header("Sec-WebSocket-Key", validKey)),
  w(1, absent),
  w(2, header("Sec-WebSocket-Key", badKey)),
  w(
    1,
    fc.tuple(validKey, validKey).map(
      ([a, b]): Headers => [
        ["Sec-WebSocket-Key", a],
        ["Sec-WebSocket-Key", b],
      ],
    ),
  ),
);
const versionH = fc.oneof(
  w(10, header("Sec-WebSocket-Version", fc.constant("13"))),
  w(1, absent),
  w(2, header("Sec-WebSocket-Version", fc.constantFrom("8", "99", "13, 8", "", "abc", "-1", "013"))),
);
const originH = fc.oneof(
  w(8, absent),
  w(2, header("Origin", fc.constantFrom("http://localhost:1234", "http://127.0.0.1:8080", "http://[::1]:3000", `http://${SELF}`))),
  w(
    2,
    header(
      "Origin",
      fc.constantFrom(
        "http://evil.com",
        "null",
        "file://",
        "http://[",
        "https://chat.example.com",
        "http://localhost.evil.com",
        "http://127.0.0.1.evil.com",
        "javascript:alert(1)",
      ),
    ),
  ),
  w(1, header("Origin", fc.webUrl())),
  w(1, header("Origin", fc.string({ maxLength: 40 }))),
);
const protocolH = fc.oneof(w(10, absent), w(1, header("Sec-WebSocket-Protocol", fc.constantFrom("chat", "chat, chat", "a b", ",", "", "x,y,z"))));
const extensionsH = fc.oneof(
  w(10, absent),
  w(
    1,
    header(
      "Sec-WebSocket-Extensions",
      fc.constantFrom(
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        ";;=",
        "x-webkit-deflate-frame",
        "permessage-deflate; permessage-deflate",
      ),
    ),
  ),
);
const headerName = fc.oneof(
  w(6, fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/)),
  w(1, fc.constantFrom("Bad Header", "X(y)", "", "X:Y", "Transfer-Encoding", "Content-Length", "Expect")),
);
const headerValue = fc.oneof(
  w(6, fc.string({ maxLength: 40 })),
  w(1, fc.constantFrom("\u0001", "a\u007fb", "100-continue", "chunked", "-1", "1, 2")),
  w(1, unicode(10)),
);
const extraH = fc.array(fc.tuple(headerName, headerValue), { maxLength: 3 });

const body = fc.oneof(
  w(4, fc.constant("")),
  w(
    2,
    fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify({ message: v })),
  ),
  w(
    1,
    unicode(40).map((s) => JSON.stringify({ message: s })),
  ),
  w(1, fc.string({ maxLength: 60 })),
);

/** A raw request: most are close to a valid upgrade, with a few things changed. */
export const httpCase: fc.Arbitrary<HttpCase> = fc
  .record({
    method,
    target,
    version,
    parts: fc.tuple(hostH, connectionH, upgradeH, keyH, versionH, originH, protocolH, extensionsH, extraH),
    lowerNames: fc.boolean(),
    body,
    framing: fc.constantFrom<HttpCase["framing"]>("none", "length", "length", "chunked", "both"),
    cuts: fc.array(fc.nat({ max: 400 }), { maxLength: 3 }),
    after101: fc.constantFrom<HttpCase["after101"]>("destroy", "close", "end"),
  })
  .map(({ parts, lowerNames, body, framing, ...rest }) => {
    const headers = (parts.flat() as Headers).map(([k, v]): [string, string] => [lowerNames ? k.toLowerCase() : k, v]);
    const b = framing === "none" ? "" : body;
    return { ...rest, headers, body: b, framing: b === "" && framing !== "chunked" ? "none" : framing };
  });

/** The bytes of an HttpCase, `SELF` replaced by `host`. */
export function httpCaseRequest(c: HttpCase, host: string): RequestSpec {
  const headers = c.headers.map(([k, v]): [string, string] => [k, v.split(SELF).join(host)]);
  const bytes = Buffer.from(c.body, "utf8");
  let body: Buffer = bytes;
  if (c.framing === "length") headers.push(["Content-Length", String(bytes.length)]);
  if (c.framing === "chunked" || c.framing === "both") {
    headers.push(["Transfer-Encoding", "chunked"]);
    body = Buffer.concat([
      bytes.length > 0 ? Buffer.from(`${bytes.length.toString(16)}\r\n`) : Buffer.alloc(0),
      bytes,
      bytes.length > 0 ? Buffer.from("\r\n") : Buffer.alloc(0),
      Buffer.from("0\r\n\r\n"),
    ]);
  }
  if (c.framing === "both") headers.push(["Content-Length", String(body.length)]);
  return { method: c.method, target: c.target.split(SELF).join(host), version: c.version, headers, body };
}

const invalidUtf8 = fc.oneof(
  fc.constantFrom<number[]>([0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xe2, 0x82], [0x80], [0xf0, 0x9f, 0x98]),
  fc.tuple(unicode(5), fc.constantFrom<number[]>([0xff], [0xc3], [0xe0, 0x80])).map(([s, bad]) => [...Buffer.from(s, "utf8"), ...bad]),
);
const engineRoom = fc.oneof(fc.constantFrom("ops", "a b", "", "x".repeat(70)), fc.string({ maxLength: 10 }));
const enginePacket = fc.oneof(
  w(3, fc.constant("40")),
  w(
    3,
    pooledId.map((id) => `40${JSON.stringify({ clientId: id })}`),
  ),
  w(
    1,
    fc.jsonValue({ maxDepth: 2 }).map((v) => `40${JSON.stringify({ clientId: v })}`),
  ),
  w(
    2,
    unicode(30).map((t) => `42${JSON.stringify(["message", t])}`),
  ),
  w(
    1,
    fc.tuple(unicode(20), engineRoom).map(([t, room]) => `42${JSON.stringify(["message", { text: t, room }])}`),
  ),
  w(
    1,
    engineRoom.map((room) => `42${JSON.stringify(["join", room])}`),
  ),
  w(
    1,
    fc.constantFrom(
      '421["message","with ack"]',
      '42["status"]',
      '423["status"]',
      '42["message"]',
      '42["message",null]',
      '42["message","x".repeat]',
      "42[",
      "42",
      "43",
      '45-["x",{"_placeholder":true,"num":0}]',
      "41",
      "2",
      "3",
      "2probe",
      "5",
      "6",
      "1",
      "4",
      "4x",
      "",
    ),
  ),
  w(
    1,
    fc.jsonValue({ maxDepth: 3 }).map((v) => `42${JSON.stringify(["message", v])}`),
  ),
  w(1, fc.string({ maxLength: 30 })),
);
/** Frames, valid and not. `maxMessageBytes` sizes the oversized ones. */
export function frameSpec(): fc.Arbitrary<FrameSpec> {
  return fc.oneof(
    w(
      6,
      unicode(120).map((text) => ({ kind: "text" as const, text })),
    ),
    w(
      2,
      fc
        .tuple(fc.jsonValue({ maxDepth: 2 }), fc.option(engineRoom, { nil: undefined }))
        .map(([text, room]) => ({ kind: "json" as const, json: JSON.stringify(room === undefined ? { text } : { text, room }) })),
    ),
    w(
      1,
      fc.constantFrom("ping", "test", " PING ").map((text) => ({ kind: "text" as const, text })),
    ),
    w(
      1,
      fc.integer({ min: 1, max: 2_000 }).map((extra) => ({ kind: "oversize" as const, extra })),
    ),
    w(
      1,
      invalidUtf8.map((bytes) => ({ kind: "bad-utf8" as const, bytes })),
    ),
    w(
      1,
      fc.array(byte, { maxLength: 40 }).map((bytes) => ({ kind: "binary" as const, bytes })),
    ),
    w(
      1,
      fc.string({ maxLength: 20 }).map((payload) => ({ kind: "ping" as const, payload })),
    ),
    w(1, fc.constant({ kind: "ping-oversize" as const })),
    w(1, fc.constant({ kind: "pong" as const })),
    w(
      2,
      fc.tuple(unicode(40), fc.nat({ max: 200 })).map(([text, at]) => ({ kind: "fragmented" as const, text, at })),
    ),
    w(
      1,
      unicode(10).map((text) => ({ kind: "orphan-continuation" as const, text })),
    ),
    w(
      1,
      unicode(10).map((text) => ({ kind: "unmasked" as const, text })),
    ),
    w(
      1,
      fc.tuple(fc.integer({ min: 1, max: 7 }), unicode(10)).map(([rsv, text]) => ({ kind: "rsv" as const, rsv, text })),
    ),
    w(
      1,
      fc.constantFrom(3, 4, 5, 6, 7, 11, 12, 13, 14, 15).map((opcode) => ({ kind: "reserved-opcode" as const, opcode })),
    ),
    w(
      1,
      fc
        .tuple(fc.constantFrom(1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1015, 999, 2999, 3000, 4999, 5000, 65535), unicode(10))
        .map(([code, reason]) => ({ kind: "close" as const, code, reason })),
    ),
    w(
      3,
      enginePacket.map((packet) => ({ kind: "engine-packet" as const, packet })),
    ),
  );
}

/** The wire bytes of a frame; `maxMessageBytes` sizes the oversized one. */
export function frameBytes(f: FrameSpec, maxMessageBytes: number): Buffer {
  switch (f.kind) {
    case "text":
      return encodeFrame({ opcode: 0x1, payload: f.text });
    case "json":
      return encodeFrame({ opcode: 0x1, payload: f.json });
    case "engine-packet":
      return encodeFrame({ opcode: 0x1, payload: f.packet });
    case "oversize":
      return encodeFrame({ opcode: 0x1, payload: "y".repeat(maxMessageBytes + f.extra) });
    case "bad-utf8":
      return encodeFrame({ opcode: 0x1, payload: Buffer.from(f.bytes) });
    case "binary":
      return encodeFrame({ opcode: 0x2, payload: Buffer.from(f.bytes) });
    case "ping":
      return encodeFrame({ opcode: 0x9, payload: f.payload });
    case "ping-oversize":
      return encodeFrame({ opcode: 0x9, payload: "p".repeat(126) });
    case "pong":
      return encodeFrame({ opcode: 0xa });
    case "fragmented": {
      // Cut at a byte offset, possibly inside a multi-byte character: legal, the receiver must join them.
      const bytes = Buffer.from(f.text, "utf8");
      const at = bytes.length === 0 ? 0 : f.at % (bytes.length + 1);
      return Buffer.concat([
        encodeFrame({ opcode: 0x1, fin: false, payload: bytes.subarray(0, at) }),
        encodeFrame({ opcode: 0x0, payload: bytes.subarray(at) }),
      ]);
    }
    case "orphan-continuation":
      return encodeFrame({ opcode: 0x0, payload: f.text });
    case "unmasked":
      return encodeFrame({ opcode: 0x1, payload: f.text, mask: false });
    case "rsv":
      return encodeFrame({ opcode: 0x1, payload: f.text, rsv: f.rsv });
    case "reserved-opcode":
      return encodeFrame({ opcode: f.opcode, payload: "x" });
    case "close": {
      const reason = Buffer.from(f.reason, "utf8").subarray(0, 100);
      const payload = Buffer.alloc(2 + reason.length);
      payload.writeUInt16BE(f.code, 0);
      reason.copy(payload, 2);
      return encodeFrame({ opcode: 0x8, payload });
    }
  }
}

const connTarget = fc.oneof(
  w(2, fc.constantFrom("/ws", "/ws?format=json")),
  w(
    2,
    fc.tuple(pooledId, fc.constantFrom("", "?format=json")).map(([id, q]) => `/ws/${id}${q}`),
  ),
  w(2, fc.constant("/socket.io/?EIO=4&transport=websocket")),
);

/** One to three concurrent upgraded connections, each with its frames. */
export const frameCase: fc.Arbitrary<WsConnCase[]> = fc.array(
  fc.record({
    target: connTarget,
    frames: fc.array(frameSpec(), { minLength: 1, maxLength: 6 }),
    cuts: fc.array(fc.nat({ max: 600 }), { maxLength: 3 }),
    end: fc.constantFrom<WsConnCase["end"]>("destroy", "close", "end"),
  }),
  { minLength: 1, maxLength: 3 },
);

// ---------------------------------------------------------------------------
// Several CONNECTs to "/" in one Engine.IO session.

/** One Engine.IO session that sends several Socket.IO CONNECTs to "/" among other packets. */
export interface MultiConnectSession {
  transport: "polling" | "websocket";
  /**
   * Engine.IO packets ("40", "42[...]"): each batch is one POST (polling,
   * joined by the record separator) or one write of frames (WebSocket). The
   * next batch goes once every CONNECT to "/" so far is answered.
   */
  batches: string[][];
  /** How the client ends it: the close packet, a WebSocket close frame, or dropping the connection (polling: always the close packet). */
  end: "close-packet" | "close-frame" | "destroy";
}

/** A CONNECT to "/" (Engine.IO "4", Socket.IO "0"), without a namespace: "40" and "40{...}". */
export const isRootConnect = (packet: string): boolean => /^40(?!\/)/.test(packet);

const smallAuth = fc.record(
  {
    clientId: fc.oneof(w(4, pooledId), w(1, fc.jsonValue({ maxDepth: 1 }))),
    token: fc.string({ maxLength: 20 }),
    offset: fc.oneof(fc.constantFrom("0-0", "1-1", "9999999999999-0"), fc.string({ maxLength: 10 })),
    epoch: fc.string({ maxLength: 10 }),
    rooms: fc.array(engineRoom, { maxLength: 3 }),
    extra: fc.jsonValue({ maxDepth: 1 }),
  },
  { requiredKeys: [] },
);
const rootConnect = fc.oneof(
  w(3, fc.constant("40")),
  w(
    3,
    pooledId.map((id) => `40${JSON.stringify({ clientId: id })}`),
  ),
  w(
    3,
    smallAuth.map((a) => `40${JSON.stringify(a)}`),
  ),
  // Arrays, strings, null: Socket.IO's parser refuses a CONNECT whose payload is not an object.
  w(
    1,
    fc.jsonValue({ maxDepth: 2 }).map((v) => `40${JSON.stringify(v)}`),
  ),
);
const otherPacket = fc.oneof(
  w(
    3,
    unicode(20).map((t) => `42${JSON.stringify(["message", t])}`),
  ),
  w(1, fc.constantFrom('421["message","with ack"]', '422["status"]', '42["join","ops"]', '423["join","ops"]', '42["leave","ops"]')),
  // A DISCONNECT from "/": a CONNECT after it may open a socket again.
  w(2, fc.constant("41")),
  w(1, fc.constantFrom("40/nope,", '40/nope,{"clientId":"x"}', "41/nope,", '42/nope,["message","x"]')),
  w(1, fc.constantFrom("3", "6")),
  w(1, fc.constantFrom("42[", "4x", '45-["x",{"_placeholder":true,"num":0}]')),
);

/**
 * One to three concurrent sessions, each with at least two CONNECTs to "/".
 * The first batch is mostly CONNECTs (any other Socket.IO packet before a
 * socket is open ends the session); later ones mix them with the rest.
 */
export const multiConnectCase: fc.Arbitrary<MultiConnectSession[]> = fc.array(
  fc
    .record({
      transport: fc.constantFrom<MultiConnectSession["transport"]>("polling", "websocket"),
      first: fc.tuple(fc.array(rootConnect, { minLength: 1, maxLength: 4 }), fc.array(otherPacket, { maxLength: 1 })),
      later: fc.array(fc.array(fc.oneof(w(3, rootConnect), w(2, otherPacket)), { minLength: 1, maxLength: 6 }), { maxLength: 2 }),
      end: fc.constantFrom<MultiConnectSession["end"]>("close-packet", "close-frame", "destroy"),
    })
    .map(({ transport, first, later, end }) => ({ transport, batches: [first.flat(), ...later], end }))
    .filter((s) => s.batches.flat().filter(isRootConnect).length >= 2),
  { minLength: 1, maxLength: 3 },
);

// ---------------------------------------------------------------------------
// Odd and oversized `auth` in CONNECT packets.

/** What a client token or clientId in an odd auth refers to; the test makes them (a fresh id and its tokens, each case). */
export type AuthRef = "sub" | "other-sub" | "jwt" | "expired-jwt" | "unsigned-jwt";

/**
 * A JSON value of an odd auth, as a recipe, so that a 120 KB string or a
 * 20,000-deep nesting prints as a few characters (`oddJson` writes its text).
 */
export type OddValue =
  | { json: unknown }
  | { repeat: string; times: number }
  | { nest: "array" | "object"; depth: number; inner: OddValue }
  | { many: OddValue; times: number }
  | { ref: AuthRef };

/** One CONNECT's auth: an object of fields (each key once), or a whole value that is not an object. */
export type OddAuth = { fields: [string, OddValue][] } | { whole: OddValue };

/** One session that sends its CONNECTs one after the other, each once the last was answered. */
export interface OddAuthCase {
  transport: "polling" | "websocket";
  connects: OddAuth[];
  end: MultiConnectSession["end"];
}

/** The JSON text of `v`, refs resolved by `refs`; written directly (never through a recursive stringify). */
export function oddJson(v: OddValue, refs: Record<AuthRef, string>): string {
  if ("json" in v) return JSON.stringify(v.json);
  if ("repeat" in v) return JSON.stringify(v.repeat.repeat(v.times));
  if ("ref" in v) return JSON.stringify(refs[v.ref]);
  if ("nest" in v) {
    const inner = oddJson(v.inner, refs);
    return v.nest === "array" ? "[".repeat(v.depth) + inner + "]".repeat(v.depth) : '{"a":'.repeat(v.depth) + inner + "}".repeat(v.depth);
  }
  const one = oddJson(v.many, refs);
  return `[${new Array<string>(v.times).fill(one).join(",")}]`;
}

/** The CONNECT payload's JSON text. */
export const oddAuthJson = (a: OddAuth, refs: Record<AuthRef, string>): string =>
  "whole" in a ? oddJson(a.whole, refs) : `{${a.fields.map(([k, v]) => `${JSON.stringify(k)}:${oddJson(v, refs)}`).join(",")}}`;

/** Under Engine.IO's default maxHttpBufferSize (about 132 KiB) with room for the rest of the packet. */
const HUGE_BYTES = 120_000;
/** Stand-ins as long as the refs the test makes (a JWT is about 150 characters), to size an auth. */
const SIZED_REFS: Record<AuthRef, string> = {
  sub: "x".repeat(20),
  "other-sub": "x".repeat(20),
  jwt: "x".repeat(300),
  "expired-jwt": "x".repeat(300),
  "unsigned-jwt": "x".repeat(300),
};
const jsonBytes = (s: string) => Buffer.byteLength(JSON.stringify(s)) - 2;

const hugeString: fc.Arbitrary<OddValue> = fc
  .record({
    repeat: fc.oneof(fc.constantFrom("a", "x", "0", '"', "\\", "é", "\u2028", "💥", "\u0000"), fc.string({ unit: "binary", minLength: 1, maxLength: 4 })),
    times: fc.oneof(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 8_000, max: 120_000 }), fc.constantFrom(8_191, 8_192, 8_193, 16_384, 65_536)),
  })
  .map(({ repeat, times }) => ({ repeat, times: Math.min(times, Math.floor(HUGE_BYTES / jsonBytes(repeat))) }));

/** Objects and arrays that a careless `String(value)` cannot turn into text. */
const unprintable = fc.constantFrom<unknown>(
  { toString: 1 },
  { toString: {}, valueOf: {} },
  [{ toString: 1 }],
  { valueOf: 1, toString: "x" },
  JSON.parse('{"__proto__":{"toString":1}}'),
);

const plainOdd: fc.Arbitrary<OddValue> = fc.oneof(
  w(
    3,
    fc.jsonValue({ maxDepth: 2 }).map((json) => ({ json })),
  ),
  w(
    1,
    unprintable.map((json) => ({ json })),
  ),
);

/** Any odd value: small JSON, huge strings, deep nesting, long arrays. */
const oddValue: fc.Arbitrary<OddValue> = fc.oneof(
  w(4, plainOdd),
  w(3, hugeString),
  w(
    2,
    fc
      .record({
        nest: fc.constantFrom<"array" | "object">("array", "object"),
        depth: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1_000, max: 60_000 }), fc.constantFrom(3_000, 3_500, 4_000, 5_000)),
        inner: fc.oneof(plainOdd, fc.constant<OddValue>({ json: "alice" })),
      })
      .map((n) => ({ ...n, depth: Math.min(n.depth, Math.floor(HUGE_BYTES / (n.nest === "array" ? 2 : 6))) })),
  ),
  w(
    2,
    fc
      .record({
        many: fc.oneof(plainOdd, fc.constantFrom<OddValue>({ json: "ops" }, { json: "a".repeat(64) }, { json: "" })),
        times: fc.oneof(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 1_000, max: 20_000 })),
      })
      .map((m) => ({ ...m, times: Math.min(m.times, Math.floor(HUGE_BYTES / (oddJson(m.many, SIZED_REFS).length + 1))) })),
  ),
);

const oddKey = fc.oneof(
  w(2, fc.constantFrom("toString", "valueOf", "__proto__", "constructor", "hasOwnProperty", "sid", "pid", "")),
  w(1, fc.string({ maxLength: 10 })),
);
const oddObject: fc.Arbitrary<OddAuth> = fc
  .record({
    known: fc.record(
      {
        clientId: fc.oneof(
          w(5, fc.constant<OddValue>({ ref: "sub" })),
          w(1, fc.constant<OddValue>({ ref: "other-sub" })),
          w(3, oddValue),
          // What a refusal message that quotes the clientId must still print.
          w(
            1,
            fc.oneof(
              unprintable.map((json) => ({ json })),
              fc.integer({ min: 2_000, max: 6_000 }).map((depth): OddValue => ({ nest: "array", depth, inner: { json: "alice" } })),
            ),
          ),
        ),
        token: fc.oneof(
          w(6, fc.constant<OddValue>({ ref: "jwt" })),
          w(1, fc.constantFrom<OddValue>({ ref: "expired-jwt" }, { ref: "unsigned-jwt" })),
          w(3, oddValue),
        ),
        offset: oddValue,
        epoch: oddValue,
        rooms: fc.oneof(
          w(
            2,
            fc.array(engineRoom, { maxLength: 5 }).map((json) => ({ json })),
          ),
          w(2, oddValue),
        ),
      },
      { requiredKeys: ["token"] },
    ),
    extra: fc.array(fc.tuple(oddKey, oddValue), { maxLength: 2 }),
  })
  .map(({ known, extra }) => {
    const fields: [string, OddValue][] = Object.entries(known);
    for (const [k, v] of extra) if (!fields.some(([name]) => name === k)) fields.push([k, v]);
    // Several huge fields together would pass Engine.IO's limit: drop the largest (never the token) until they fit.
    const size = (v: OddValue) => Buffer.byteLength(oddJson(v, SIZED_REFS));
    while (fields.reduce((n, [k, v]) => n + Buffer.byteLength(k) + size(v) + 4, 2) > HUGE_BYTES) {
      const largest = fields.reduce((best, f, i) => (f[0] !== "token" && (best < 0 || size(f[1]) > size(fields[best]![1])) ? i : best), -1);
      if (largest < 0) break;
      fields.splice(largest, 1);
    }
    return { fields };
  });

/** One session with one to three CONNECTs, mostly objects, some with a whole value that is not one. */
export const oddAuthCase: fc.Arbitrary<OddAuthCase> = fc.record({
  transport: fc.constantFrom<OddAuthCase["transport"]>("polling", "websocket"),
  connects: fc.array(
    fc.oneof(
      w(6, oddObject),
      w(
        1,
        oddValue.map((whole) => ({ whole })),
      ),
    ),
    { minLength: 1, maxLength: 3 },
  ),
  end: fc.constantFrom<OddAuthCase["end"]>("close-packet", "close-frame", "destroy"),
});

// ---------------------------------------------------------------------------
// Forged forwarding headers, sent straight to an instance that trusts one proxy.

/** `@A` and `@B` in a value stand for the test's two source addresses (the flooder's and another's). */
export const ADDRESS_A = "@A";
export const ADDRESS_B = "@B";

/** A header list's values with `@A` and `@B` replaced. */
export const withAddresses = (headers: Headers, a: string, b: string): Headers =>
  headers.map(([k, v]): [string, string] => [k, v.split(ADDRESS_A).join(a).split(ADDRESS_B).join(b)]);

/** What node:http sends and parses in a header value: tab, printable ASCII, and bytes 0x80-0xFF (obs-text). */
const headerChar = fc
  .oneof(w(8, fc.integer({ min: 0x20, max: 0x7e })), w(1, fc.integer({ min: 0x80, max: 0xff })), w(1, fc.constant(0x09)))
  .map((c) => String.fromCharCode(c));
const garbage = (maxLength: number) => fc.string({ unit: headerChar, maxLength });

const hop = fc.oneof(
  w(4, fc.constantFrom(ADDRESS_A, ADDRESS_B, ADDRESS_A, ADDRESS_B, `::ffff:${ADDRESS_A}`, `${ADDRESS_B}:80`, `[${ADDRESS_A}]`)),
  w(3, fc.constantFrom("127.0.0.1", "::1", "[::1]:8080", "0.0.0.0", "127.1", "2130706433", "0x7f.0.0.1", "fe80::1%lo", "::ffff:127.0.0.1", "255.255.255.255")),
  w(2, fc.ipV4()),
  w(2, fc.ipV6()),
  w(1, fc.constantFrom("unknown", "_hidden", "", " ", "localhost", "1.2.3.4:5678", "1.2.3", "999.1.1.1", "::", "[", "]")),
  w(2, garbage(20)),
);
const separator = fc.constantFrom(",", ", ", " , ", ",,", "\t,", ", ,");
const hops = fc.oneof(
  w(
    4,
    fc.tuple(fc.array(hop, { minLength: 1, maxLength: 8 }), separator).map(([list, sep]) => list.join(sep)),
  ),
  // Very long: one hop repeated up to hundreds of times.
  w(
    1,
    fc.tuple(hop, fc.integer({ min: 50, max: 500 }), separator).map(([h, n, sep]) => new Array<string>(n).fill(h || "1.1.1.1").join(sep)),
  ),
  w(1, garbage(200)),
);
const forwardedElement = fc
  .tuple(hop, fc.boolean(), fc.option(fc.constantFrom("proto=https", "by=127.0.0.1", "host=evil.com", "for", "for=", '"'), { nil: undefined }))
  .map(([h, quoted, extra]) => [`for=${quoted ? `"${h}"` : h}`, ...(extra ? [extra] : [])].join(";"));
const forwardingHeader = fc.oneof(
  w(4, fc.tuple(fc.constantFrom("X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR"), hops)),
  w(
    2,
    fc.tuple(
      fc.constant("Forwarded"),
      fc.oneof(
        fc.array(forwardedElement, { minLength: 1, maxLength: 5 }).map((e) => e.join(", ")),
        garbage(60),
      ),
    ),
  ),
  w(2, fc.tuple(fc.constantFrom("X-Real-IP", "x-real-ip"), fc.oneof(hop, garbage(40)))),
);
/** Headers that look like forwarding but are not ones the server reads. */
const decoyHeader = fc.tuple(fc.constantFrom("X-Forwarded-Host", "X-Client-IP", "True-Client-IP", "CF-Connecting-IP", "X-Forwarded", "Via"), hop);

/** A header list cut to `budget` characters of values (Node refuses heads over 16 KiB with 431), keeping at least one. */
const withinBudget = (headers: Headers, budget = 9_000): Headers => {
  const out: Headers = [];
  let used = 0;
  for (const [k, v] of headers) {
    const value = v.slice(0, Math.max(0, budget - used));
    if (out.length > 0 && value.length < v.length) break;
    out.push([k, value]);
    used += value.length;
  }
  return out;
};
const forgedHeaders = (min: number): fc.Arbitrary<Headers> =>
  fc.tuple(fc.array(forwardingHeader, { minLength: min, maxLength: 4 }), fc.array(decoyHeader, { maxLength: 2 }), fc.nat()).map(([forwarding, decoys, at]) => {
    const all: Headers = [...forwarding];
    for (const d of decoys) all.splice(at % (all.length + 1), 0, d);
    return withinBudget(all);
  });
/** A header that names `@A` as the client, as a proxy would append it. */
const namingA = fc.oneof(
  fc.tuple(fc.array(hop, { maxLength: 4 }), separator).map(([before, sep]): [string, string] => ["X-Forwarded-For", [...before, ADDRESS_A].join(sep)]),
  fc.constant<[string, string]>(["Forwarded", `for=${ADDRESS_A}`]),
  fc.constant<[string, string]>(["X-Real-IP", ADDRESS_A]),
);

/** Forged headers for each request of one case (see the proxy property). */
export interface ForgedCase {
  /** The flooder's, from @A: often naming @B (a server that believed them would punish @B). */
  flood: Headers;
  /** @A's next upgrade and Socket.IO session, after the cut. */
  retry: Headers;
  /** From @B, naming @A as the client. */
  other: Headers;
  /** An admin request's: at least one forwarding header. */
  admin: Headers;
  adminRequest: "GET /clients" | "POST /broadcast-to-all" | "GET /history";
}

export const forgedCase: fc.Arbitrary<ForgedCase> = fc.record({
  flood: forgedHeaders(0),
  retry: forgedHeaders(0),
  other: fc.tuple(namingA, forgedHeaders(0), fc.boolean()).map(([a, rest, last]) => withinBudget(last ? [...rest, a] : [a, ...rest])),
  admin: forgedHeaders(1).filter((h) => h.some(([k]) => /^(x-forwarded-for|forwarded|x-real-ip)$/i.test(k))),
  adminRequest: fc.constantFrom<ForgedCase["adminRequest"]>("GET /clients", "POST /broadcast-to-all", "GET /history"),
});

// ---------------------------------------------------------------------------
// Resumes from offsets the history never gave, malformed ones, other epochs.

/** A resume offset, relative to the history's head when the case runs. */
export type OffsetSpec =
  | { future: "far" | "max" | "next-ms" | "next-seq" | "padded"; k: number }
  | { head: true }
  /** A string that is not an offset (`<ms>-<seq>`, 1-16 digits each). */
  | { raw: string }
  /** Not a string (Socket.IO only; /ws sends its JSON text). */
  | { value: unknown };
export type EpochSpec = { current: true } | { other: string } | { raw: string } | { value: unknown } | { absent: true };

export interface ResumeClient {
  via: "ws" | "sio-websocket" | "sio-polling";
  offset: OffsetSpec;
  epoch: EpochSpec;
}

const OFFSET_PATTERN = /^\d{1,16}-\d{1,16}$/;
const EPOCH_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
const offsetSpec: fc.Arbitrary<OffsetSpec> = fc.oneof(
  w(
    5,
    fc.record({
      future: fc.constantFrom<"far" | "max" | "next-ms" | "next-seq" | "padded">("far", "max", "next-ms", "next-seq", "padded"),
      k: fc.nat({ max: 1_000 }),
    }),
  ),
  w(1, fc.constant({ head: true as const })),
  w(
    3,
    fc
      .oneof(
        fc.constantFrom(
          "",
          "-",
          "1-",
          "-1",
          "1e5-0",
          "0x10-0",
          "1.5-0",
          "99999999999999999-0",
          "1-99999999999999999",
          " 1-0",
          "1-0 ",
          "١-٠",
          "1_0",
          "+1-0",
          "9999999999999-0-0",
        ),
        fc.string({ maxLength: 20 }),
        fc.string({ unit: "binary", maxLength: 10 }),
      )
      .filter((s) => !OFFSET_PATTERN.test(s))
      .map((raw) => ({ raw })),
  ),
  w(
    1,
    fc
      .oneof(fc.constantFrom<unknown>(9999999999999, -1, 1.5, null, true, ["9999999999999-0"], { ms: 1, seq: 0 }), fc.jsonValue({ maxDepth: 1 }))
      .filter((v) => typeof v !== "string")
      .map((value) => ({ value })),
  ),
);
const epochSpec: fc.Arbitrary<EpochSpec> = fc.oneof(
  w(5, fc.constant({ current: true as const })),
  w(
    3,
    fc.stringMatching(EPOCH_PATTERN).map((other) => ({ other })),
  ),
  w(
    1,
    fc
      .oneof(fc.constantFrom("", " ", "a b", "é", "x".repeat(33), "abc\n", "../x"), fc.string({ maxLength: 40 }))
      .filter((s) => !EPOCH_PATTERN.test(s))
      .map((raw) => ({ raw })),
  ),
  w(
    1,
    fc.constantFrom<unknown>(1, null, ["e"], { epoch: "e" }).map((value) => ({ value })),
  ),
  w(1, fc.constant({ absent: true as const })),
);

/** One to three clients that connect at once, each resuming from its odd offset. */
export const resumeCase: fc.Arbitrary<ResumeClient[]> = fc.array(
  fc.record({ via: fc.constantFrom<ResumeClient["via"]>("ws", "sio-websocket", "sio-polling"), offset: offsetSpec, epoch: epochSpec }),
  { minLength: 1, maxLength: 3 },
);
