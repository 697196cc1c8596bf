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
