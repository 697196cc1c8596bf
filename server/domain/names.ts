/** Client ids: short tokens, integers included (the old service B used integers); not `.` or `..`, which no URL path can carry. */
export const CLIENT_ID_PATTERN = /^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$/;
/** Room names share the client id alphabet, plus ':' for namespacing such as "team:red". */
export const ROOM_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

/** The texts that also ask for a status notification (old service A). */
export const COMMANDS = ["ping", "test"] as const;

/** `ping` / `test`, trimmed, any case. */
export const isStatusCommand = (text: string): boolean => {
  const t = text.trim().toLowerCase();
  return t === "ping" || t === "test";
};

export const now = (): string => new Date().toISOString();
