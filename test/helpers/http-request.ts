import http from "node:http";

export interface HttpAnswer {
  status: number;
  /** Lower-cased names, as node:http gives them. */
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * One HTTP request on a connection of its own (no agent, no keep-alive), from
 * `localAddress` when given: nginx's per-address limits see each source
 * address (127.0.0.2, 127.0.0.3, ... all reach 127.0.0.1 on Linux) as a
 * different client.
 */
export function httpRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; localAddress?: string; timeoutMs?: number } = {},
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: opts.method ?? "GET",
        headers: { connection: "close", ...opts.headers },
        localAddress: opts.localAddress,
        agent: false,
        timeout: opts.timeoutMs ?? 5_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${opts.method ?? "GET"} ${url}: no answer within ${opts.timeoutMs ?? 5_000} ms`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}
