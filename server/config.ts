import os from "node:os";
import proxyaddr from "proxy-addr";
import { z } from "zod";

/** Seconds, fractions allowed so tests can run timers in milliseconds. */
const seconds = (fallback: number, { allowZero = false } = {}) =>
  z
    .string()
    .trim()
    .default(String(fallback))
    .transform(Number)
    .pipe(
      allowZero
        ? z.number({ error: "must be a number of seconds" }).finite().min(0, "must be 0 or more")
        : z.number({ error: "must be a number of seconds" }).finite().positive("must be more than 0"),
    );

/** A whole number in [min, max]. */
const whole = (fallback: number, min: number, max: number) =>
  z
    .string()
    .trim()
    .default(String(fallback))
    .transform(Number)
    .pipe(z.number({ error: "must be a whole number" }).int("must be a whole number").min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

const flag = z
  .string()
  .trim()
  .toLowerCase()
  .default("false")
  .pipe(z.enum(["true", "false", "1", "0", "yes", "no"], { error: "must be true or false" }))
  .transform((v) => v === "true" || v === "1" || v === "yes");

const optionalText = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === "" ? undefined : v));

/** A comma list of browser origins (`https://app.example.com`), `*` where allowed. */
const originList = ({ allowAny }: { allowAny: boolean }) =>
  z
    .string()
    .optional()
    .transform((v) =>
      v === undefined || v.trim() === ""
        ? undefined
        : v
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean),
    )
    .pipe(
      z
        .array(
          allowAny
            ? z.union([z.literal("*"), z.url({ protocol: /^https?$/, error: "each entry must be * or an origin such as https://app.example.com" })])
            : z.url({ protocol: /^https?$/, error: "each entry must be an origin such as https://chat.example.com" }),
        )
        .optional(),
    );

/**
 * The proxies whose X-Forwarded-For is believed: addresses, CIDRs and
 * proxy-addr's names (`loopback`, `linklocal`, `uniquelocal`), as Express's
 * `trust proxy` takes them. `true` would believe any peer, so it is refused.
 */
const proxyList = z
  .string()
  .optional()
  .transform((v) =>
    v === undefined || ["", "false", "0", "no"].includes(v.trim().toLowerCase())
      ? []
      : v
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean),
  )
  .superRefine((list, ctx) => {
    if (list.some((v) => ["true", "1", "yes", "*"].includes(v.toLowerCase()))) {
      ctx.addIssue({
        code: "custom",
        message:
          "must list the proxies whose X-Forwarded-For to believe (e.g. 127.0.0.1, 10.0.0.0/8, loopback), not true: true would let anyone forge their address",
      });
      return;
    }
    try {
      proxyaddr.compile(list);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: `must be a comma list of addresses, CIDRs, loopback, linklocal or uniquelocal (${(err as Error).message})` });
    }
  });

const JWT_ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"] as const;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

const REDIS_URL_PATTERN = /^rediss?:\/\/\S+$/;

const schema = z.object({
  PORT: z
    .string()
    .trim()
    .default("8000")
    .transform(Number)
    .pipe(z.number({ error: "must be a whole number" }).int("must be a whole number").min(0).max(65535, "must be a port from 0 to 65535")),
  HOST: z.string().trim().min(1, "must not be empty").default("127.0.0.1"),
  INSTANCE_ID: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9_.:-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    .optional(),
  LOG_LEVEL: z
    .string()
    .trim()
    .toLowerCase()
    .default("info")
    .pipe(z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(", ")}` })),
  LOG_FORMAT: z
    .string()
    .trim()
    .toLowerCase()
    .optional()
    .transform((v) => (v === undefined || v === "" ? undefined : v))
    .pipe(z.enum(["json", "pretty"], { error: "must be json or pretty" }).optional()),
  FORCED_SHUTDOWN_AFTER_SEC: seconds(1800),
  PROGRESS_LOG_EVERY_SEC: seconds(5),
  PERIODIC_INTERVAL_SEC: seconds(10, { allowZero: true }),
  MAX_MESSAGE_BYTES: z
    .string()
    .trim()
    .default("65536")
    .transform(Number)
    .pipe(
      z
        .number({ error: "must be a whole number" })
        .int("must be a whole number")
        .min(16, "must be at least 16")
        .max(16 * 1024 * 1024, "must be at most 16 MiB"),
    ),
  MAX_BUFFERED_BYTES: z
    .string()
    .trim()
    .optional()
    .transform((v) => (v === undefined ? undefined : Number(v)))
    .pipe(
      z
        .number({ error: "must be a whole number" })
        .int("must be a whole number")
        .min(0, "must be 0 or more")
        .max(1024 * 1024 * 1024, "must be at most 1 GiB")
        .optional(),
    ),
  CORS_ORIGINS: originList({ allowAny: true }),
  PUBLIC_ORIGINS: originList({ allowAny: false }),
  RATE_LIMIT_MESSAGES_PER_SEC: z
    .string()
    .trim()
    .default("20")
    .transform(Number)
    .pipe(z.number({ error: "must be a number" }).finite().min(0, "must be 0 (off) or more").max(1_000_000)),
  RATE_LIMIT_BURST: whole(10, 1, 1_000_000),
  RATE_LIMIT_DISCONNECT_AFTER: whole(20, 0, 1_000_000),
  RATE_LIMIT_PENALTY_SEC: seconds(10, { allowZero: true }),
  TRUST_PROXY: proxyList,
  CONNECT_TIMEOUT_SEC: seconds(5),
  REPLAY_MAX_BYTES: whole(2 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
  REPLAY_CONCURRENCY: whole(8, 1, 10_000),
  REPLAY_STALL_SEC: seconds(10),
  ADDRESS_RATE_LIMIT_MESSAGES_PER_SEC: whole(200, 0, 10_000_000),
  ADDRESS_RATE_LIMIT_BYTES_PER_SEC: whole(64 * 1024, 0, 1024 * 1024 * 1024),
  INSTANCE_RATE_LIMIT_MESSAGES_PER_SEC: whole(5_000, 0, 10_000_000),
  INSTANCE_RATE_LIMIT_BYTES_PER_SEC: whole(16 * 1024 * 1024, 0, 1024 * 1024 * 1024),
  REDIS_HOLD_SEC: z
    .string()
    .trim()
    .optional()
    .transform((v) => (v === undefined ? undefined : Number(v)))
    .pipe(z.number({ error: "must be a number of seconds" }).finite().min(0, "must be 0 or more").optional()),
  STATUS_INTERVAL_SEC: seconds(1, { allowZero: true }),
  MAX_ROOMS_PER_CONNECTION: whole(100, 0, 1_000_000),
  HISTORY_SIZE: whole(1000, 0, 1_000_000),
  HISTORY_TTL_SEC: seconds(600, { allowZero: true }),
  DRAIN_CLOSE_SPREAD_SEC: seconds(0, { allowZero: true }),
  MAX_CONNECTIONS: whole(20_000, 0, 10_000_000),
  ADMIN_OPEN: flag,
  AUTH_JWT_SECRET: optionalText,
  AUTH_JWT_PUBLIC_KEY: optionalText,
  AUTH_JWT_ALGORITHM: z
    .string()
    .trim()
    .optional()
    .transform((v) => (v === undefined || v === "" ? undefined : v))
    .pipe(z.enum(JWT_ALGORITHMS, { error: `must be one of ${JWT_ALGORITHMS.join(", ")}` }).optional()),
  AUTH_JWT_ISSUER: optionalText,
  MAX_CONNECTIONS_PER_USER: whole(0, 0, 1_000_000),
  TOKEN_REFRESH_AHEAD_SEC: seconds(30, { allowZero: true }),
  TOKEN_EXPIRY_GRACE_SEC: seconds(5, { allowZero: true }),
  AUTH_JWT_AUDIENCE: optionalText,
  ADMIN_TOKEN: z
    .string()
    .optional()
    .transform((v) => (v === undefined || v === "" ? undefined : v)),
  REDIS_URL: z
    .string()
    .trim()
    .optional()
    .transform((v) => (v === undefined || v === "" ? undefined : v))
    .pipe(z.string().regex(REDIS_URL_PATTERN, "must be a redis:// or rediss:// URL").optional()),
  // Seed nodes of a Redis Cluster: the client learns the rest from them.
  REDIS_CLUSTER_NODES: z
    .string()
    .optional()
    .transform((v) => (v === undefined || v.trim() === "" ? undefined : v.split(",").map((s) => s.trim())))
    .pipe(z.array(z.string().regex(REDIS_URL_PATTERN, "must be a comma-separated list of redis:// or rediss:// URLs")).optional()),
});

/** Every environment variable the service reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.freeze(Object.keys(schema.shape));

export interface Config {
  /** @default 8000 (0 picks a free port) */
  readonly port: number;
  /** @default "127.0.0.1" */
  readonly host: string;
  /** Names this instance in logs, payloads and Engine.IO session ids. @default "<hostname>:<port>" */
  readonly instanceId: string;
  /** @default "info" */
  readonly logLevel: (typeof LOG_LEVELS)[number];
  /** JSON lines, or pretty lines for a terminal. @default "pretty" when stdout is a TTY, else "json" */
  readonly logFormat: "json" | "pretty" | undefined;
  /** Drain deadline, milliseconds. @default 1_800_000 */
  readonly forcedShutdownAfterMs: number;
  /** @default 5_000 */
  readonly progressLogEveryMs: number;
  /** 0 turns periodic notifications off. @default 10_000 */
  readonly periodicIntervalMs: number;
  /** Largest message text (and /ws frame), bytes. @default 65536 */
  readonly maxMessageBytes: number;
  /** Unsent bytes a client may have queued here before it is cut as too slow; 0 turns the check off. @default max(8 MiB, 4 × maxMessageBytes) */
  readonly maxBufferedBytes: number;
  /** The origins the service is served at (its own pages). Unset: any loopback origin. */
  readonly publicOrigins: readonly string[] | undefined;
  /** Other sites' origins allowed to connect (`*` for any). */
  readonly corsOrigins: readonly string[] | undefined;
  /** Bearer token of the admin endpoints (POST /broadcast-to-all, GET /clients). */
  readonly adminToken: string | undefined;
  /** Admin endpoints open without a token on a non-loopback address (trusted networks only). @default false */
  readonly adminOpen: boolean;
  /** Per-connection inbound messages a second (token bucket); 0 turns the limit off. @default 20 */
  readonly rateLimitPerSec: number;
  /** Token bucket size: messages a connection may send at once. @default 10 */
  readonly rateLimitBurst: number;
  /** Refused messages in a row after which the connection is closed; 0: never. @default 20 */
  readonly rateLimitDisconnectAfter: number;
  /** After a rate-limit disconnect, new sessions from that address are refused this long; 0: never. @default 10_000 */
  readonly rateLimitPenaltyMs: number;
  /** Proxies whose X-Forwarded-For is believed (walked from the right past them). @default [] (none: the TCP peer is the client) */
  readonly trustProxy: readonly string[];
  /** An Engine.IO session that has not connected to the namespace after this long is closed. @default 5_000 */
  readonly connectTimeoutMs: number;
  /** Payload bytes one recovery may replay; past it the newest that fit are replayed with recovered: false (TOO_LARGE). @default 2 MiB */
  readonly replayMaxBytes: number;
  /** Replays one instance runs at once (read and sent); others wait their turn. @default 8 */
  readonly replayConcurrency: number;
  /** A client whose replay waits this long for it to read is cut as too slow. @default 10_000 */
  readonly replayStallMs: number;
  /** Client messages (and bytes) one address may publish a second, cluster-wide; 0: no limit. @default 200, 64 KiB */
  readonly addressRateLimit: { perSec: number; bytesPerSec: number };
  /** Client messages (and bytes) one instance accepts a second from all its clients; 0: no limit. @default 5000, 16 MiB */
  readonly instanceRateLimit: { perSec: number; bytesPerSec: number };
  /** How long broadcasts wait for an unreachable Redis before an instance delivers them to its own clients only. @default 2_000 (one Redis), 20_000 (a cluster) */
  readonly redisHoldMs: number | undefined;
  /** Least time between two status notifications of this instance; 0: no spacing. @default 1_000 */
  readonly statusIntervalMs: number;
  /** Broadcasts kept for recovery (approximately, with Redis); 0 turns history and recovery off. @default 1000 */
  readonly historySize: number;
  /** Broadcasts older than this are dropped from the history; 0: no time bound. @default 600_000 */
  readonly historyTtlMs: number;
  /** At the drain deadline, leftovers are closed spread over this window (reconnects do not arrive as one wave); 0: all at once. @default 0 */
  readonly drainCloseSpreadMs: number;
  /** Rooms one Socket.IO connection may be in; 0: no cap. @default 100 */
  readonly maxRoomsPerConnection: number;
  /** Connections (Engine.IO sessions and /ws) this instance accepts; 0: no cap. @default 20_000 */
  readonly maxConnections: number;
  /** Client tokens: required when a key is set. */
  readonly auth: JwtConfig | undefined;
  /** Connections one user (a token's `sub`) may hold at once, cluster-wide; 0: no cap. @default 0 */
  readonly maxConnectionsPerUser: number;
  /** A connection is told this long before its token's `exp` to send a fresh one. @default 30_000 */
  readonly tokenRefreshAheadMs: number;
  /** A connection whose token has expired is closed this long after its `exp` (TOKEN_EXPIRED). @default 5_000 */
  readonly tokenExpiryGraceMs: number;
  /** One Redis. Unset (and no cluster): one instance with Socket.IO's in-memory adapter. */
  readonly redisUrl: string | undefined;
  /** Seed nodes of a Redis Cluster (sharded pub/sub); exclusive with redisUrl. */
  readonly redisClusterNodes: readonly string[] | undefined;
}

export interface JwtConfig {
  /** HMAC secret (HS*) or a PEM public key (SPKI), as given. */
  readonly key: { kind: "secret"; secret: string } | { kind: "public"; pem: string };
  readonly algorithm: (typeof JWT_ALGORITHMS)[number];
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
}

/** Whether a bind address only accepts loopback connections. */
export const isLoopbackHost = (host: string): boolean => host === "localhost" || host === "::1" || /^127\./.test(host);

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration: ${problems.join("; ")}`);
    this.name = "ConfigError";
  }
}

/**
 * Parses and validates the environment once. Every bad variable is named in
 * one ConfigError; the result is frozen.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Only our variables, and empty strings count as unset for the defaulted ones.
  const input: Record<string, string | undefined> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    input[key] = value === "" && key !== "ADMIN_TOKEN" ? undefined : value;
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".")}=${JSON.stringify(env[String(issue.path[0])] ?? "")} ${issue.message}`);
    throw new ConfigError(problems);
  }
  const c = parsed.data;
  // Unset: 8 MiB, or room for four messages of the largest size.
  const maxBufferedBytes = c.MAX_BUFFERED_BYTES ?? Math.max(8 * 1024 * 1024, 4 * c.MAX_MESSAGE_BYTES);
  if (maxBufferedBytes !== 0 && maxBufferedBytes < c.MAX_MESSAGE_BYTES) {
    // Otherwise one message of the largest size would cut every client.
    throw new ConfigError([
      `MAX_BUFFERED_BYTES=${JSON.stringify(env.MAX_BUFFERED_BYTES ?? "")} must be 0 (off) or at least MAX_MESSAGE_BYTES (${c.MAX_MESSAGE_BYTES})`,
    ]);
  }
  if (c.REDIS_URL !== undefined && c.REDIS_CLUSTER_NODES !== undefined) {
    throw new ConfigError(["REDIS_URL and REDIS_CLUSTER_NODES: set one, not both (REDIS_URL is one Redis, REDIS_CLUSTER_NODES a Redis Cluster)"]);
  }
  let auth: JwtConfig | undefined;
  if (c.AUTH_JWT_SECRET !== undefined && c.AUTH_JWT_PUBLIC_KEY !== undefined) {
    throw new ConfigError(["AUTH_JWT_SECRET and AUTH_JWT_PUBLIC_KEY: set one, not both"]);
  }
  if (c.AUTH_JWT_SECRET !== undefined || c.AUTH_JWT_PUBLIC_KEY !== undefined) {
    const algorithm = c.AUTH_JWT_ALGORITHM ?? (c.AUTH_JWT_SECRET !== undefined ? "HS256" : "RS256");
    const hmac = algorithm.startsWith("HS");
    if (hmac !== (c.AUTH_JWT_SECRET !== undefined)) {
      throw new ConfigError([`AUTH_JWT_ALGORITHM=${JSON.stringify(algorithm)} ${hmac ? "needs AUTH_JWT_SECRET" : "needs AUTH_JWT_PUBLIC_KEY"}`]);
    }
    if (c.AUTH_JWT_SECRET !== undefined && Buffer.byteLength(c.AUTH_JWT_SECRET) < 32) {
      throw new ConfigError(["AUTH_JWT_SECRET must be at least 32 bytes"]);
    }
    auth = Object.freeze({
      key:
        c.AUTH_JWT_SECRET !== undefined
          ? { kind: "secret" as const, secret: c.AUTH_JWT_SECRET }
          : { kind: "public" as const, pem: c.AUTH_JWT_PUBLIC_KEY as string },
      algorithm,
      issuer: c.AUTH_JWT_ISSUER,
      audience: c.AUTH_JWT_AUDIENCE,
    });
  }
  return Object.freeze({
    port: c.PORT,
    host: c.HOST,
    instanceId: c.INSTANCE_ID ?? `${os.hostname()}:${c.PORT}`,
    logLevel: c.LOG_LEVEL,
    logFormat: c.LOG_FORMAT,
    forcedShutdownAfterMs: Math.round(c.FORCED_SHUTDOWN_AFTER_SEC * 1000),
    progressLogEveryMs: Math.round(c.PROGRESS_LOG_EVERY_SEC * 1000),
    periodicIntervalMs: Math.round(c.PERIODIC_INTERVAL_SEC * 1000),
    maxMessageBytes: c.MAX_MESSAGE_BYTES,
    maxBufferedBytes,
    publicOrigins: c.PUBLIC_ORIGINS ? Object.freeze([...c.PUBLIC_ORIGINS]) : undefined,
    corsOrigins: c.CORS_ORIGINS ? Object.freeze([...c.CORS_ORIGINS]) : undefined,
    adminToken: c.ADMIN_TOKEN,
    adminOpen: c.ADMIN_OPEN,
    rateLimitPerSec: c.RATE_LIMIT_MESSAGES_PER_SEC,
    rateLimitBurst: c.RATE_LIMIT_BURST,
    rateLimitDisconnectAfter: c.RATE_LIMIT_DISCONNECT_AFTER,
    rateLimitPenaltyMs: Math.round(c.RATE_LIMIT_PENALTY_SEC * 1000),
    trustProxy: Object.freeze([...c.TRUST_PROXY]),
    connectTimeoutMs: Math.round(c.CONNECT_TIMEOUT_SEC * 1000),
    replayMaxBytes: c.REPLAY_MAX_BYTES,
    replayConcurrency: c.REPLAY_CONCURRENCY,
    replayStallMs: Math.round(c.REPLAY_STALL_SEC * 1000),
    addressRateLimit: Object.freeze({ perSec: c.ADDRESS_RATE_LIMIT_MESSAGES_PER_SEC, bytesPerSec: c.ADDRESS_RATE_LIMIT_BYTES_PER_SEC }),
    instanceRateLimit: Object.freeze({ perSec: c.INSTANCE_RATE_LIMIT_MESSAGES_PER_SEC, bytesPerSec: c.INSTANCE_RATE_LIMIT_BYTES_PER_SEC }),
    redisHoldMs: c.REDIS_HOLD_SEC === undefined ? undefined : Math.round(c.REDIS_HOLD_SEC * 1000),
    statusIntervalMs: Math.round(c.STATUS_INTERVAL_SEC * 1000),
    maxRoomsPerConnection: c.MAX_ROOMS_PER_CONNECTION,
    historySize: c.HISTORY_SIZE,
    historyTtlMs: Math.round(c.HISTORY_TTL_SEC * 1000),
    drainCloseSpreadMs: Math.round(c.DRAIN_CLOSE_SPREAD_SEC * 1000),
    maxConnections: c.MAX_CONNECTIONS,
    auth,
    maxConnectionsPerUser: c.MAX_CONNECTIONS_PER_USER,
    tokenRefreshAheadMs: Math.round(c.TOKEN_REFRESH_AHEAD_SEC * 1000),
    tokenExpiryGraceMs: Math.round(c.TOKEN_EXPIRY_GRACE_SEC * 1000),
    redisUrl: c.REDIS_URL,
    redisClusterNodes: c.REDIS_CLUSTER_NODES ? Object.freeze([...c.REDIS_CLUSTER_NODES]) : undefined,
  });
}
