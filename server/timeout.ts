/** Settles like `p`, or rejects with "`what` did not answer within `ms` ms" first. */
export function withTimeout<T>(p: Promise<T>, ms: number, what = "redis"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
