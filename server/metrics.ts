import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Prometheus metrics, on a registry of this app's own (so two apps in one
 * process, as in tests, keep separate figures).
 */
export function createMetrics(read: { connections(): Record<string, number>; draining(): boolean }) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const connections = new Gauge({
    name: "wbs_connections",
    help: "Open client connections by transport (socket.io-polling, socket.io-websocket, ws)",
    labelNames: ["transport"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [transport, n] of Object.entries(read.connections())) this.set({ transport }, n);
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
  return {
    registry,
    connections,
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
    slowClientsCut: new Counter({
      name: "wbs_slow_clients_cut_total",
      help: "Clients disconnected because their unsent data passed MAX_BUFFERED_BYTES, by transport",
      labelNames: ["transport"] as const,
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
