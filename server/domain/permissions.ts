import { ServiceError } from "../errors.js";
import { ROOM_RULE, isRoomName, isUserRoom, userRoom } from "./names.js";

/**
 * What one connection may do with rooms, from its token's `wbs` claim:
 * `read` (join, receive, be replayed) and `send` as room patterns, and
 * `broadcast` (send to everyone). A pattern is an exact room name, a prefix
 * ending in `*` (`team:42:*`), or `*` (every room). Without tokens there are
 * no grants: rooms are open.
 */
export interface Grants {
  readonly read: readonly string[];
  readonly send: readonly string[];
  readonly broadcast: boolean;
}

/** Patterns a list may hold, and characters a pattern: a token stays a few KiB. */
export const MAX_PATTERNS = 64;
const PATTERN = /^(?:[A-Za-z0-9_.:-]{1,64}|[A-Za-z0-9_.:-]{0,63}\*)$/;

const matches = (pattern: string, room: string): boolean => (pattern.endsWith("*") ? room.startsWith(pattern.slice(0, -1)) : pattern === room);

/** Grants of a token with no `wbs` claim: nothing but its personal room. */
export const NO_GRANTS: Grants = Object.freeze({ read: Object.freeze([]), send: Object.freeze([]), broadcast: false });

/** Total: the `wbs` claim (any JSON) as grants, or UNAUTHORIZED saying what is wrong with it. */
export function parseGrants(claim: unknown): Grants | ServiceError {
  if (claim === undefined) return NO_GRANTS;
  if (typeof claim !== "object" || claim === null || Array.isArray(claim)) return bad("the wbs claim must be an object");
  const c = claim as Record<string, unknown>;
  const read = patterns(c.read, "read");
  if (read instanceof ServiceError) return read;
  const send = patterns(c.send, "send");
  if (send instanceof ServiceError) return send;
  if (c.broadcast !== undefined && typeof c.broadcast !== "boolean") return bad("wbs.broadcast must be true or false");
  return Object.freeze({ read, send, broadcast: c.broadcast === true });
}

function patterns(list: unknown, name: string): readonly string[] | ServiceError {
  if (list === undefined) return Object.freeze([]);
  if (!Array.isArray(list) || list.length > MAX_PATTERNS) return bad(`wbs.${name} must be an array of at most ${MAX_PATTERNS} room patterns`);
  for (const p of list) {
    if (typeof p !== "string" || !PATTERN.test(p)) {
      return bad(`wbs.${name} holds ${JSON.stringify(p)?.slice(0, 80)}: a pattern is a room name, or a prefix of one ending in *`);
    }
  }
  return Object.freeze([...(list as string[])]);
}

const bad = (why: string) => new ServiceError("UNAUTHORIZED", `client token: ${why}`);

/**
 * Who a connection is and what it may do: its user (the token's `sub`, or
 * its clientId without tokens) and its grants (undefined: open rooms, no
 * tokens). Its personal room is always readable, never joinable by name.
 */
export class Permissions {
  constructor(
    readonly user: string,
    readonly grants: Grants | undefined,
  ) {}

  get personalRoom(): string {
    return userRoom(this.user);
  }

  /** Whether it may be in `room` (join it, receive and be replayed its messages). */
  mayRead(room: string): boolean {
    if (room === this.personalRoom) return true;
    // Another user's personal room: no grant reads it (a backend reaches a user there, not its peers).
    if (isUserRoom(room)) return false;
    return this.grants === undefined || this.grants.read.some((p) => matches(p, room));
  }

  /** Whether it may send to `room`, or to everyone when undefined. Personal rooms take a grant, tokens or not. */
  maySend(room: string | undefined): boolean {
    if (room === undefined) return this.grants === undefined || this.grants.broadcast;
    if (this.grants === undefined) return !isUserRoom(room);
    return this.grants.send.some((p) => matches(p, room));
  }

  /** Throws FORBIDDEN unless it may join `room` by name (a personal room is joined for it, never by name). */
  checkJoin(room: string): void {
    if (!isRoomName(room)) throw new ServiceError("BAD_REQUEST", ROOM_RULE);
    if (isUserRoom(room) && room !== this.personalRoom) throw new ServiceError("FORBIDDEN", `room ${room} is another user's personal room`);
    if (!this.mayRead(room)) throw new ServiceError("FORBIDDEN", `this token may not read room ${room}`);
  }

  checkSend(room: string | undefined): void {
    if (!this.maySend(room))
      throw new ServiceError("FORBIDDEN", room === undefined ? "this token may not send to everyone" : `this token may not send to room ${room}`);
  }
}
