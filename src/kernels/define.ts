// Every kernel is defined once and exposed twice: a synchronous call and a Promise form that
// runs on a libuv worker thread (off the event loop).
export interface Prepared<T> {
  /** Calls the addon; with async = true the addon returns a Promise. */
  run(async: boolean): unknown;
  /** Builds the public result from what the addon returned. */
  result(nativeResult: unknown): T;
}

export interface KernelOp<A extends unknown[], T> {
  sync: (...args: A) => T;
  async: (...args: A) => Promise<T>;
}

export function defineOp<A extends unknown[], T>(prepare: (...args: A) => Prepared<T>): KernelOp<A, T> {
  return {
    sync: (...args: A): T => {
      const p = prepare(...args);
      return p.result(p.run(false));
    },
    async: async (...args: A): Promise<T> => {
      const p = prepare(...args);
      return p.result(await p.run(true));
    },
  };
}
