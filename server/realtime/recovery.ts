import type { BroadcastDomain } from "../domain/broadcast.js";
import { compareOffsets, parseOffset } from "../domain/history.js";
import type { Envelope, Welcome } from "../protocol.js";

/** What a reconnecting client says it has: the last offset of an epoch. */
export interface Resume {
  epoch: string;
  offset: string;
}

const EPOCH = /^[A-Za-z0-9_-]{1,32}$/;

/** A client's resume request (Socket.IO `auth`, /ws `?since=&epoch=`), or undefined: total, never throws. */
export function parseResume(epoch: unknown, offset: unknown): Resume | undefined {
  const o = parseOffset(offset);
  return o !== undefined && typeof epoch === "string" && EPOCH.test(epoch) ? { epoch, offset: o } : undefined;
}

const offsetOf = (e: Envelope): string | undefined => (e.event.data as { offset?: string }).offset;

/**
 * The replay-to-live boundary of one connection. While the history is read,
 * live broadcasts for the connection are held (`pending`, filled by its
 * gateway's sink); then come the replayed entries it may see, then the held
 * ones that the replay did not already carry. Nothing twice, nothing missed,
 * in offset order.
 */
export async function recoverConnection(opts: {
  domain: BroadcastDomain;
  resume: Resume | undefined;
  limit: number;
  /** Whether the connection may see this entry (its rooms). */
  entitled: (e: Envelope) => boolean;
  /** Live broadcasts held meanwhile; read after the replay. */
  pending: () => readonly Envelope[];
}): Promise<{ recovered: boolean; replay: Envelope[]; held: Envelope[]; offset: string | undefined }> {
  const { domain, resume } = opts;
  if (!resume) return { recovered: false, replay: [], held: [...opts.pending()], offset: domain.head()?.offset };
  const { entries, complete } = await domain.recover(resume.epoch, resume.offset, opts.limit);
  const last = entries.length > 0 ? offsetOf(entries[entries.length - 1]!) : undefined;
  const seen = last ?? (complete ? resume.offset : undefined);
  const replay = entries.filter(opts.entitled);
  const held = opts.pending().filter((e) => {
    const o = offsetOf(e);
    return o === undefined || seen === undefined || compareOffsets(o, seen) > 0;
  });
  return { recovered: complete, replay, held, offset: seen ?? domain.head()?.offset };
}

/** The welcome of a connection, with where it stands in the history. */
export function welcomeOf(
  base: Pick<Welcome, "clientId" | "instance" | "commands" | "at">,
  domain: BroadcastDomain,
  result: { recovered: boolean; offset: string | undefined },
  replayed: number,
): Welcome {
  const head = domain.head();
  return { ...base, epoch: head?.epoch ?? "", offset: result.offset ?? head?.offset ?? "", recovered: result.recovered, replayed };
}
