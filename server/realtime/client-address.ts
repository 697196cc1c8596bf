import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import proxyaddr from "proxy-addr";

/** Who a request comes from, under TRUST_PROXY. */
export interface ClientAddresses {
  /** The client's address (the penalty box's and the limits' key). */
  of(req: IncomingMessage): string;
  /**
   * Whether it reached us through a proxy: it carries a forwarding header
   * (X-Forwarded-For, Forwarded, X-Real-IP), as every proxy in front of us
   * must send (the shipped nginx.conf does), or its peer is a trusted proxy
   * that is not this machine (where a proxy and an operator share loopback).
   */
  proxied(req: IncomingMessage): boolean;
}

/**
 * The client's address is the TCP peer, or, when the peer is a proxy named in
 * TRUST_PROXY, the X-Forwarded-For chain walked from the right past every
 * trusted hop (proxy-addr, as Express's `trust proxy`). Whatever a client
 * writes into the header itself stays left of what our nginx appends, so it is
 * never reached. Total: a hop that is not an address yields the peer.
 */
export function clientAddresses(trusted: readonly string[]): ClientAddresses {
  const trust = proxyaddr.compile([...trusted]);
  const peerOf = (req: IncomingMessage) => req.socket?.remoteAddress ?? "unknown";
  return {
    of(req) {
      if (trusted.length === 0) return peerOf(req);
      const address = proxyaddr(req, trust);
      return isIP(address) ? address : peerOf(req);
    },
    proxied(req) {
      const h = req.headers;
      if (h["x-forwarded-for"] !== undefined || h.forwarded !== undefined || h["x-real-ip"] !== undefined) return true;
      const peer = req.socket?.remoteAddress;
      return trusted.length > 0 && peer !== undefined && trust(peer, 0) && !isLoopback(peer);
    },
  };
}

/** A loopback address (IPv4, IPv6 or IPv4-mapped). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined || isIP(address) === 0) return false;
  return address === "::1" || /^(::ffff:)?127\./.test(address);
}
