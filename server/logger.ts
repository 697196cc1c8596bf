import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger };

/**
 * Root logger: one JSON record a line on stdout, the instance on every line.
 * Components take `log.child({ component })`.
 */
export function createLogger(opts: { instance: string; level: string; destination?: DestinationStream }): Logger {
  return pino(
    {
    level: opts.level,
    base: { instance: opts.instance, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
