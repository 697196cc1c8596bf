import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Prometheus metrics, on a registry of this app's own (so two apps in one
 * process, as in tests, keep separate figures).
 */
/** Open connections: `transport` as on every other metric (socket.io, ws), `via` the wire under it (polling, websocket). */
export interface ConnectionCount {
  transport: "socket.io" | "ws";
  via: "polling" | "websocket";
  count: number;
}

export function createMetrics(read: { connections(): ConnectionCount[]; clientIds(): number; draining(): boolean; pendingSessions(): number }) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const connections = new Gauge({
    name: "wbs_connections",
    help: "Open client connections by transport (socket.io, ws) and the wire under it (via: polling, websocket)",
    labelNames: ["transport", "via"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const { transport, via, count } of read.connections()) this.set({ transport, via }, count);
    },
  });
  const draining = new Gauge({
    name: "wbs_draining",
    help: "1 while this instance drains, else 0",
    registers: [registry],
    collect() {
      this.set(read.draining() ? 1 : 0);
    },
  });
  const clientIds = new Gauge({
    name: "wbs_client_ids",
    help: "ClientIds this instance holds; equals the sum of wbs_connections unless an id leaked",
    registers: [registry],
    collect() {
      this.set(read.clientIds());
    },
  });
  const pendingSessions = new Gauge({
    name: "wbs_pending_sessions",
    help: "Engine.IO sessions not (yet) connected to the namespace: they hold a MAX_CONNECTIONS slot until CONNECT_TIMEOUT_SEC",
    registers: [registry],
    collect() {
      this.set(read.pendingSessions());
    },
  });
  return {
    registry,
    connections,
    pendingSessions,
    clientIds,
    draining,
    messagesIn: new Counter({
      name: "wbs_messages_received_total",
      help: "Messages received from clients, by transport",
      labelNames: ["transport"] as const,
      registers: [registry],
    }),
    messagesOut: new Counter({
      name: "wbs_messages_sent_total",
      help: "Frames delivered to this instance's clients, by transport",
      labelNames: ["transport"] as const,
      registers: [registry],
    }),
    broadcasts: new Counter({
      name: "wbs_broadcasts_total",
      help: "Broadcasts published from this instance, by origin (socket.io, ws, http, status, periodic, draining)",
      labelNames: ["origin"] as const,
      registers: [registry],
    }),
    writeBursts: new Counter({
      name: "wbs_write_bursts_total",
      help: "Event-loop turns with more than one delivery, in which every WebSocket connection was corked so the burst left in one write each",
      registers: [registry],
    }),
    socketIoFrames: new Counter({
      name: "wbs_socketio_broadcast_frames_total",
      help: "Broadcast frames to Socket.IO clients: written whole to the client's socket (path=direct), or sent by Engine.IO (path=engine.io: polling, or a write of Engine.IO's in flight)",
      labelNames: ["path"] as const,
      registers: [registry],
    }),
    slowClientsCut: new Counter({
      name: "wbs_slow_clients_cut_total",
      help: "Clients disconnected because their unsent data passed MAX_BUFFERED_BYTES, by transport",
      labelNames: ["transport"] as const,
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: "wbs_rate_limited_total",
      help: "Client messages refused by the per-connection rate limit, by transport",
      labelNames: ["transport"] as const,
      registers: [registry],
    }),
    publishLimited: new Counter({
      name: "wbs_publish_limited_total",
      help: "Client messages refused by the publish limits of their address (cluster-wide) or of the instance, by transport and scope",
      labelNames: ["transport", "scope"] as const,
      registers: [registry],
    }),
    recoveries: new Counter({
      name: "wbs_recoveries_total",
      help: "Reconnects that asked to recover, by outcome: recovered, or why not (EPOCH_CHANGED, TRIMMED, GAP, TOO_LARGE, FUTURE_OFFSET, UNAVAILABLE)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    rateLimitDisconnects: new Counter({
      name: "wbs_rate_limit_disconnects_total",
      help: "Connections closed for sending on while rate limited (RATE_LIMIT_DISCONNECT_AFTER refusals in a row), by transport",
      labelNames: ["transport"] as const,
      registers: [registry],
    }),
    clusterPublishesSkipped: new Counter({
      name: "wbs_cluster_publishes_skipped_total",
      help: "Broadcasts delivered to this instance's clients only because Redis was away",
      registers: [registry],
    }),
    unexpectedErrors: new Counter({
      name: "wbs_unexpected_errors_total",
      help: "Exceptions caught by the last-resort guard (answered 500 to that request alone), by where (request, upgrade)",
      labelNames: ["where"] as const,
      registers: [registry],
    }),
    malformedRequests: new Counter({
      name: "wbs_malformed_requests_total",
      help: "Requests Node's HTTP parser refused (answered 400, 408 or 431)",
      registers: [registry],
    }),
    refusals: new Counter({
      name: "wbs_refusals_total",
      help: "Refused connections and messages, by code",
      labelNames: ["code"] as const,
      registers: [registry],
    }),
  };
}
