import type { ClusterBus, Gathered, Query, QueryName } from "../cluster/bus.js";
import type { ClientRegistry } from "../cluster/registry.js";
import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { ChatMessage, DomainEvent, Envelope, InstanceStatus, Notification, Origin } from "../protocol.js";
import type { BroadcastLog, ReadBudget, Replay } from "./history.js";
import { ROOM_RULE, isRoomName, isStatusCommand, now } from "./names.js";

export type { Envelope };

/** A gateway's local connections, as the domain sees them. */
export interface LocalSink {
  /** Metric label of what it delivers on. */
  readonly transport: string;
  /** Delivers to this gateway's own connections; answers how many it reached. */
  deliver(envelope: Envelope): number;
  /** Its connections a broadcast to `room` (none: everyone) reaches. */
  count(room?: string): number;
}

export interface DomainOptions {
  instanceId: string;
  bus: ClusterBus<Envelope>;
  /** The ordered history; undefined: history off (delivery straight through the bus). */
  history?: BroadcastLog;
  registry: ClientRegistry;
  drain: DrainState;
  log: Logger;
  metrics: Metrics;
  maxMessageBytes: number;
  /** Least time between two status notifications. @default 0 */
  statusIntervalMs?: number;
  /** Called before each local delivery (the transports batch the writes of a burst). */
  beforeDelivery?: () => void;
}

export interface Published {
  sent: number;
  partial: boolean;
}

/**
 * The broadcast domain: every connection of every transport on every
 * instance. The one publish path both gateways and the HTTP endpoint use:
 * deliver to this instance's connections, then hand the same envelope to the
 * cluster bus for every other instance.
 */
export class BroadcastDomain {
  readonly #sinks: LocalSink[] = [];
  readonly #opts: DomainOptions;
  readonly #answers = new Map<QueryName, (query: Query) => unknown>();
  #periodic: NodeJS.Timeout | undefined;
  /** The next (or current) status notification; requests meanwhile share it. */
  #status: Promise<void> | undefined;
  #statusAt = -Infinity;

  constructor(opts: DomainOptions) {
    this.#opts = opts;
    opts.bus.serve({
      deliver: (envelope) => this.deliverLocal(envelope),
      answer: (query) => this.#answer(query),
    });
    opts.history?.onDelivery((envelope) => this.deliverLocal(envelope));
  }

  get instanceId(): string {
    return this.#opts.instanceId;
  }

  addSink(sink: LocalSink): void {
    this.#sinks.push(sink);
  }

  /** Delivers to this instance's connections only. */
  deliverLocal(envelope: Envelope): number {
    this.#opts.beforeDelivery?.();
    let total = 0;
    for (const sink of this.#sinks) {
      const n = sink.deliver(envelope);
      if (n > 0) this.#opts.metrics.messagesOut.inc({ transport: sink.transport }, n);
      total += n;
    }
    return total;
  }

  /**
   * To every instance's connections. With history: appended first (its
   * offset), then delivered by every instance in offset order. Without:
   * local delivery, then the bus. Fire and forget.
   */
  publish(envelope: Envelope): void {
    this.#count(envelope);
    const { history, bus, log } = this.#opts;
    if (history) {
      history.append(envelope).catch((err: unknown) => log.error({ err }, "publish failed"));
      return;
    }
    this.deliverLocal(envelope);
    bus.publish(envelope);
  }

  /** As publish, answering the number of connections reached on all instances. */
  async publishCounted(envelope: Envelope): Promise<Published> {
    this.#count(envelope);
    const { history, bus } = this.#opts;
    if (history) {
      await history.append(envelope);
      // Delivery runs through the history's channel; count who it reaches.
      const remote = await bus.query<number>({ name: "members", ...(envelope.room !== undefined ? { room: envelope.room } : {}) });
      return { sent: remote.answers.reduce((a, b) => a + b, this.#members(envelope.room)), partial: remote.partial };
    }
    const local = this.deliverLocal(envelope);
    const remote = await bus.publishCounted(envelope);
    return { sent: remote.answers.reduce((a, b) => a + b, local), partial: remote.partial };
  }

  /** Where a new connection starts in the history, or undefined when history is off. */
  head(): { epoch: string; offset: string } | undefined {
    return this.#opts.history?.head();
  }

  /** What a reconnecting client missed since `offset` of `epoch` (see BroadcastLog.since). */
  async recover(epoch: string, offset: string, budget: ReadBudget): Promise<Replay> {
    const { history } = this.#opts;
    return history ? history.since(epoch, offset, budget) : { entries: [], complete: false, reason: "UNAVAILABLE" };
  }

  /** The history after `offset`, oldest first (see BroadcastLog.page). */
  async historyPage(epoch: string, offset: string, budget: ReadBudget): Promise<Replay> {
    const { history } = this.#opts;
    return history ? history.page(epoch, offset, budget) : { entries: [], complete: false, reason: "UNAVAILABLE" };
  }

  /** Tells this instance's clients, once, that it drains. */
  notifyDraining(): void {
    this.notifyLocal({ type: "draining", instance: this.instanceId, at: now() });
  }

  /** A notification for this instance's clients only (periodic, draining). */
  notifyLocal(notification: Notification): number {
    this.#opts.metrics.broadcasts.inc({ origin: notification.type });
    return this.deliverLocal({ event: { event: "notification", data: notification } });
  }

  /**
   * A text a client sent: validated, broadcast to the domain (or a room), and
   * for `ping`/`test` followed by a status notification to everyone.
   * @throws ServiceError BAD_REQUEST or TOO_LARGE; nothing is sent then.
   */
  async handleClientText(input: { from: string; origin: Origin; text: unknown; room?: unknown }): Promise<void> {
    const message = this.message(input);
    this.publish({ event: { event: "message", data: message }, room: message.room });
    if (isStatusCommand(message.text)) await this.publishStatus(input.from);
  }

  /** Builds a chat message, or throws a ServiceError that says what is wrong. */
  message(input: { from: string; origin: Origin; text: unknown; room?: unknown }): ChatMessage {
    const { text, room } = input;
    if (typeof text !== "string" || text.length === 0) {
      throw new ServiceError("BAD_REQUEST", "message must be a non-empty string");
    }
    if (Buffer.byteLength(text) > this.#opts.maxMessageBytes) {
      throw new ServiceError("TOO_LARGE", String(this.#opts.maxMessageBytes));
    }
    if (room !== undefined && !isRoomName(room)) throw new ServiceError("BAD_REQUEST", ROOM_RULE);
    const message: ChatMessage = { text, from: input.from, instance: this.instanceId, origin: input.origin, at: now() };
    if (room !== undefined) message.room = room;
    return message;
  }

  /**
   * A status notification to everyone, coalesced: at most one cluster query
   * in flight, at most one notification per `statusIntervalMs`. A request
   * that arrives while one is pending or in flight shares it, so a `ping`
   * flood costs one query an interval, not one a ping.
   */
  publishStatus(requestedBy: string): Promise<void> {
    return (this.#status ??= this.#nextStatus(requestedBy));
  }

  async #nextStatus(requestedBy: string): Promise<void> {
    try {
      const wait = this.#statusAt + (this.#opts.statusIntervalMs ?? 0) - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait).unref());
      const status = await this.clusterStatus();
      this.publish({ event: { event: "notification", data: { type: "status", requestedBy, ...status, at: now() } } });
    } finally {
      this.#statusAt = performance.now();
      this.#status = undefined;
    }
  }

  localStatus(): InstanceStatus {
    return { id: this.instanceId, clients: this.#opts.registry.size, draining: this.#opts.drain.draining };
  }

  async clusterStatus(): Promise<{ instances: InstanceStatus[]; clients: number; partial: boolean }> {
    const remote = await this.#opts.bus.query<InstanceStatus>({ name: "status" });
    const instances = [this.localStatus(), ...remote.answers].sort((a, b) => a.id.localeCompare(b.id));
    return { instances, clients: instances.reduce((n, i) => n + i.clients, 0), partial: remote.partial };
  }

  /** Asks every other instance (a query another part answers: see `answer`). */
  ask<T>(query: Query): Promise<Gathered<T>> {
    return this.#opts.bus.query<T>(query);
  }

  /** Installs this instance's answer to a query of another part (the connections', the users'). */
  answer(name: QueryName, handler: (query: Query) => unknown): void {
    this.#answers.set(name, handler);
  }

  /**
   * Each instance notifies its own clients, so every client gets exactly one
   * periodic notification an interval however many instances run, with no
   * lock to race for and nothing lost while Redis is away.
   */
  startPeriodic(intervalMs: number): void {
    if (intervalMs <= 0 || this.#periodic) return;
    this.#periodic = setInterval(() => {
      this.notifyLocal({ type: "periodic", instance: this.instanceId, intervalSec: intervalMs / 1000, at: now() });
    }, intervalMs);
    this.#periodic.unref();
  }

  stopPeriodic(): void {
    clearInterval(this.#periodic);
    this.#periodic = undefined;
  }

  #count(envelope: Envelope): void {
    const e: DomainEvent = envelope.event;
    this.#opts.metrics.broadcasts.inc({ origin: e.event === "message" ? e.data.origin : e.data.type });
  }

  #members(room?: string): number {
    return this.#sinks.reduce((n, sink) => n + sink.count(room), 0);
  }

  #answer(query: Query): unknown {
    if (query.name === "status") return this.localStatus();
    if (query.name === "members") return this.#members(typeof query.room === "string" ? query.room : undefined);
    return this.#answers.get(query.name)?.(query) ?? null;
  }
}
