/** Client ids: short tokens, integers included (the old service B used integers); not `.` or `..`, which no URL path can carry. */
export const CLIENT_ID_PATTERN = /^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$/;
/** Room names share the client id alphabet, plus ':' for namespacing such as "team:red". */
export const ROOM_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;
export const ROOM_RULE = "room must be 1-64 characters of A-Z a-z 0-9 _ . : -, or user:<user>";

/** Personal rooms: `user:<user>`. Every connection is in its user's; no client joins one by name. */
export const USER_ROOM_PREFIX = "user:";
export const userRoom = (user: string): string => `${USER_ROOM_PREFIX}${user}`;
export const isUserRoom = (room: string): boolean => room.startsWith(USER_ROOM_PREFIX);

/** A room name: ROOM_PATTERN, or a personal room (whose user may be up to 64 characters). Total. */
export const isRoomName = (room: unknown): room is string =>
  typeof room === "string" && (ROOM_PATTERN.test(room) || (isUserRoom(room) && CLIENT_ID_PATTERN.test(room.slice(USER_ROOM_PREFIX.length))));

/** The texts that also ask for a status notification (old service A). */
export const COMMANDS = ["ping", "test"] as const;

/** `ping` / `test`, trimmed, any case. */
export const isStatusCommand = (text: string): boolean => {
  const t = text.trim().toLowerCase();
  return t === "ping" || t === "test";
};

export const now = (): string => new Date().toISOString();
