/** At most this many addresses are held; past it the oldest penalty is dropped (a map an attacker cannot grow without bound). */
const MAX_ADDRESSES = 100_000;

/**
 * The penalty box: after a connection is cut for flooding, new sessions from
 * its address are refused for `ms`, so an abuser cannot reconnect for a
 * fresh burst again and again. Clients already connected from that address
 * (an office behind one NAT) keep their connections.
 */
export class PenaltyBox {
  readonly #until = new Map<string, number>();
  /**
   * @param share tells the other instances (so a flooder cut here cannot
   *   reconnect elsewhere through nginx for a fresh burst); they call
   *   `punish(address, false)`.
   */
  constructor(
    readonly ms: number,
    private readonly share: (address: string) => void = () => undefined,
  ) {}

  punish(address: string, shared = true): void {
    if (this.ms <= 0 || typeof address !== "string" || address.length > 128) return;
    if (shared) this.share(address);
    this.#until.delete(address); // re-inserted last: the Map stays in expiry order
    this.#until.set(address, performance.now() + this.ms);
    if (this.#until.size > MAX_ADDRESSES) this.#until.delete(this.#until.keys().next().value as string);
  }

  /** Seconds left on the address's penalty, or 0. */
  remainingSec(address: string): number {
    const until = this.#until.get(address);
    if (until === undefined) return 0;
    const left = until - performance.now();
    if (left > 0) return Math.ceil(left / 1000);
    this.#until.delete(address);
    return 0;
  }
}
