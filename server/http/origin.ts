const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * Browser origins we accept: none given (tools such as websocat and curl send
 * none), the page's own origin, localhost, and any in CORS_ORIGINS.
 */
export function originAllowed(origin: string | undefined, host: string | undefined, list: readonly string[] | undefined): boolean {
  if (!origin) return true;
  if (list?.includes("*") || list?.includes(origin)) return true;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  if (host && url.host === host) return true;
  return LOCAL_HOSTS.has(url.hostname);
}
