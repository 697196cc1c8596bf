import type { ErrorBody, ErrorCode } from "./protocol.js";

export type { ErrorCode };

/**
 * The one catalogue of coded errors. Each code maps to the HTTP status of a
 * refused request or upgrade, the WebSocket close code of a refused /ws
 * session, and the data of a Socket.IO `connect_error`.
 */
export const ERRORS = {
  DRAINING: { status: 503, close: 1001, message: () => "server is draining" },
  DUPLICATE_CLIENT_ID: { status: 409, close: 1008, message: (id?: string) => `Client ${id} is already connected` },
  INVALID_CLIENT_ID: {
    status: 400,
    close: 1008,
    message: (id?: string) => `invalid clientId ${JSON.stringify(id)}: use 1-64 characters of A-Z a-z 0-9 _ . -`,
  },
  ORIGIN_NOT_ALLOWED: { status: 403, close: 1008, message: (origin?: string) => `origin ${origin} is not allowed` },
  NOT_FOUND: { status: 404, close: 1008, message: (path?: string) => `no route for ${path}` },
  UNAUTHORIZED: { status: 401, close: 1008, message: (why?: string) => why ?? "missing or wrong bearer token" },
  ADMIN_DISABLED: {
    status: 403,
    close: 1008,
    message: () =>
      "admin endpoints without ADMIN_TOKEN answer only requests from this machine that came through no proxy: set ADMIN_TOKEN (then send Authorization: Bearer <token>), or ADMIN_OPEN=true on a trusted network",
  },
  FORBIDDEN: { status: 403, close: 1008, message: (why?: string) => why ?? "not permitted" },
  TOKEN_EXPIRED: {
    status: 401,
    close: 4001,
    message: () => "client token expired: connect again with a fresh token (or send one in time with refresh)",
  },
  TOO_MANY_CONNECTIONS: { status: 429, close: 1008, message: (limit?: string) => `this user already holds ${limit} connections (MAX_CONNECTIONS_PER_USER)` },
  BLOCKED: { status: 403, close: 4003, message: (why?: string) => why ?? "this user is blocked" },
  DISCONNECTED: { status: 410, close: 4000, message: (why?: string) => why ?? "disconnected by the server" },
  RATE_LIMITED: { status: 429, close: 1008, message: (why?: string) => `rate limited: ${why}` },
  TOO_MANY_ROOMS: { status: 429, close: 1008, message: (limit?: string) => `too many rooms: at most ${limit} a connection` },
  OVER_CAPACITY: { status: 503, close: 1013, message: (limit?: string) => `instance is full (${limit} connections): try another` },
  BAD_REQUEST: { status: 400, close: 1007, message: (why?: string) => why ?? "bad request" },
  TOO_LARGE: { status: 413, close: 1009, message: (limit?: string) => `message is larger than ${limit} bytes` },
  UNSUPPORTED_DATA: { status: 415, close: 1003, message: () => "binary frames are not supported; send text" },
  INTERNAL: { status: 500, close: 1011, message: () => "internal error" },
} as const satisfies Record<ErrorCode, { status: number; close: number; message: (detail?: string) => string }>;

export class ServiceError extends Error {
  readonly status: number;
  readonly closeCode: number;
  /** What a Socket.IO client sees as `err.data` of `connect_error`. */
  readonly data: { code: ErrorCode };

  constructor(
    readonly code: ErrorCode,
    detail?: string,
    /** A WebSocket close code other than the code's own (an admin's disconnect names one). */
    closeCode?: number,
  ) {
    const entry = ERRORS[code];
    super(entry.message(detail));
    this.name = "ServiceError";
    this.status = entry.status;
    this.closeCode = closeCode ?? entry.close;
    this.data = { code };
  }

  /** JSON body of an HTTP error answer. */
  toJSON(): ErrorBody {
    return { error: this.message, code: this.code };
  }
}
