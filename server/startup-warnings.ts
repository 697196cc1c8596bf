import { type Config, isLoopbackHost } from "./config.js";
import type { Logger } from "./logger.js";

/** Says once, at start-up, which defaults leave the service less open than the operator may expect (or more). */
export function warnAboutDefaults(config: Config, log: Logger): void {
  if (config.adminToken === undefined && !config.adminOpen) {
    log[isLoopbackHost(config.host) ? "info" : "warn"](
      { host: config.host },
      "admin endpoints answer only requests from this machine that came through no proxy (others get 403): set ADMIN_TOKEN, or ADMIN_OPEN=true on a trusted network",
    );
  }
  if (config.publicOrigins === undefined && !isLoopbackHost(config.host)) {
    log.warn(
      { host: config.host },
      "PUBLIC_ORIGINS is unset: browser pages are accepted from loopback origins only; set it to the origin(s) users load the page from",
    );
  }
}
