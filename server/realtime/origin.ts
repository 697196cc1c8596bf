const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

export interface OriginPolicy {
  /** Whether a browser on `origin` may open a session (Socket.IO or /ws). */
  allows(origin: string | undefined): boolean;
}

/**
 * Browser origins we accept, from configuration only, never from a header the
 * client controls (a `Host` that matches a hostile `Origin` proves nothing:
 * that is DNS rebinding). Allowed: requests with no `Origin` (tools such as
 * websocat and curl send none); `publicOrigins`, the origins the service is
 * served at, or, when unset, any loopback origin (`localhost`, `127.0.0.1`,
 * `[::1]`, any port); and `corsOrigins`, other sites allowed to connect
 * (`*` for any).
 */
export function createOriginPolicy(opts: { publicOrigins: readonly string[] | undefined; corsOrigins: readonly string[] | undefined }): OriginPolicy {
  const listed = [...(opts.publicOrigins ?? []), ...(opts.corsOrigins ?? [])];
  const any = listed.includes("*");
  const allowed = new Set(listed.filter((o) => o !== "*").map(normalise));
  const loopback = opts.publicOrigins === undefined;
  return {
    allows(origin) {
      if (origin === undefined || origin === "") return true;
      if (any) return true;
      let url: URL;
      try {
        url = new URL(origin);
      } catch {
        return false; // "null" (sandboxed frames, file://) and anything unreadable
      }
      if (allowed.has(url.origin)) return true;
      return loopback && (url.protocol === "http:" || url.protocol === "https:") && LOOPBACK_HOSTS.has(url.hostname);
    },
  };
}

/** Scheme, host and port in the form browsers send (`https://a.example` for `https://A.example:443/`). */
function normalise(origin: string): string {
  try {
    return new URL(origin).origin;
  } catch {
    return origin;
  }
}
