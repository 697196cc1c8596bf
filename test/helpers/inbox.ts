/**
 * What a test receives (events, frames), with waits for the first item that
 * matches, already here or still to come; each item is handed out once by
 * `next`. The harness's own waiting primitive, under the name the tests use.
 */
export { Arrivals as Inbox } from "../../harness/waiting.js";
