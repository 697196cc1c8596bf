import { type DestinationStream, type Logger, pino } from "pino";
import { build as pretty } from "pino-pretty";

export type { Logger };

/** How a terminal shows a record: time, level, instance, [component], message, then the other fields. */
export const PRETTY_OPTIONS = {
  translateTime: "SYS:HH:MM:ss.l",
  ignore: "pid,hostname,instance,component",
  messageFormat: "{instance} {if component}[{component}] {end}{msg}",
  singleLine: true,
} as const;

/**
 * Root logger, the instance on every line: JSON lines (one record a line) for
 * machines, or `pretty` lines for a terminal (pino-pretty, in this thread so
 * nothing is lost at exit). Components take `log.child({ component })`.
 */
export function createLogger(opts: { instance: string; level: string; pretty?: boolean; destination?: DestinationStream }): Logger {
  const destination =
    opts.destination ??
    (opts.pretty ? pretty({ ...PRETTY_OPTIONS, colorize: !process.env.NO_COLOR, sync: true, destination: 1 }) : pino.destination({ fd: 1, sync: true }));
  return pino(
    {
      level: opts.level,
      base: { instance: opts.instance, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
