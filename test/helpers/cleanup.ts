/**
 * Cleanup registered before a test can fail: each `defer(fn)` runs after the
 * current test, newest first, whether it passed or not.
 */
export function useCleanup(): (task: () => unknown) => void {
  const tasks: (() => unknown)[] = [];
  afterEach(async function () {
    this.timeout(30_000);
    const errors: unknown[] = [];
    while (tasks.length > 0) {
      try {
        await tasks.pop()!();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw errors[0];
  });
  return (task) => void tasks.push(task);
}
