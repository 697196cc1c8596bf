import * as wsLib from "ws";

/** ws's framer (exported by ws, not typed by @types/ws): the header, then the payload. */
interface FramerOptions {
  fin: boolean;
  opcode: number;
  mask: boolean;
  readOnly: boolean;
  rsv1: boolean;
}
const { Sender } = wsLib as unknown as { Sender: { frame(data: Buffer, options: FramerOptions): Buffer[] } };

const TEXT: FramerOptions = { fin: true, opcode: 0x1, mask: false, readOnly: true, rsv1: false };

/**
 * A whole WebSocket text frame (header and payload in one Buffer), built once
 * per broadcast. Server frames are unmasked, so the bytes are the same for
 * every client: each gets one socket write of this Buffer, where ws's send()
 * would frame it again and write header and payload apart (cork, two writes,
 * uncork: a writev) for every client.
 */
export function wholeTextFrame(text: string): Buffer {
  const parts = Sender.frame(Buffer.from(text), TEXT);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * Socket.IO's adapters build a broadcast's WebSocket frame once too
 * (`wsPreEncodedFrame`, which Engine.IO writes with ws's sendFrame), but as
 * header and payload apart: a cork, two writes and an uncork for each client.
 * This joins them on `adapter`, so each client gets one write. It wraps the
 * adapter's `_encode` (socket.io-adapter's, which the Redis adapters inherit);
 * answers false, and changes nothing, if a later version has none.
 */
export function joinPreEncodedFrames(adapter: object): boolean {
  type Encode = (this: unknown, packet: unknown, opts: { wsPreEncodedFrame?: Buffer[] }) => unknown;
  const target = adapter as { _encode?: Encode };
  const encode = target._encode;
  if (typeof encode !== "function") return false;
  target._encode = function (packet, opts) {
    const encoded = encode.call(this, packet, opts);
    const frame = opts.wsPreEncodedFrame;
    if (frame && frame.length > 1) opts.wsPreEncodedFrame = [Buffer.concat(frame)];
    return encoded;
  };
  return true;
}
