/**
 * Total parsers for the parts of a request a client controls. Each answers a
 * value or `undefined` (the caller refuses with a status); none throws.
 */

export interface RequestTarget {
  readonly pathname: string;
  /** Decoded query, last value winning for a repeated key (as Engine.IO reads it). */
  readonly query: Readonly<Record<string, string>>;
}

/**
 * Parses an origin-form request target (`/path?query`). Anything else
 * (absolute-form, `*`, a target `new URL` cannot read) is `undefined`.
 */
export function parseTarget(raw: string | undefined): RequestTarget | undefined {
  if (raw?.[0] !== "/") return undefined;
  try {
    // Concatenated, not resolved against a base: "//x" must stay a path, not an authority.
    const url = new URL(`http://target.invalid${raw}`);
    return { pathname: url.pathname, query: Object.fromEntries(url.searchParams) };
  } catch {
    return undefined;
  }
}

/** `decodeURIComponent` that answers `undefined` for malformed percent-encoding. */
export function decodePathSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
