import type { Logger } from "../logger.js";

/**
 * Broadcasts an instance kept to its own clients while Redis was away:
 * logged once when an outage starts and once when publishing works again
 * (with the count), each one counted by `onSkipped` (a metric).
 */
export function skippedPublishes(log: Logger, onSkipped: () => void): { skip(): void; published(): void } {
  let skipped = 0;
  return {
    skip() {
      if (skipped++ === 0) log.warn("redis away: cross-instance publishes skipped until it returns");
      onSkipped();
    },
    published() {
      if (skipped > 0) log.info({ skipped }, "redis is back: cross-instance publishes resume");
      skipped = 0;
    },
  };
}
