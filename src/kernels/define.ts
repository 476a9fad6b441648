// Every kernel is defined once and exposed twice: a synchronous call and a Promise form that
// runs on a libuv worker thread (off the event loop).
export interface Prepared<T, R = unknown> {
  /** Calls the addon; with async = true the addon returns a Promise. */
  run(async: boolean): R | Promise<R>;
  /** Builds the public result from what the addon returned. */
  result(nativeResult: R): T;
}

export interface KernelOp<A extends unknown[], T> {
  sync: (...args: A) => T;
  async: (...args: A) => Promise<T>;
}

export function defineOp<A extends unknown[], T, R>(prepare: (...args: A) => Prepared<T, R>): KernelOp<A, T> {
  return {
    sync: (...args: A): T => {
      const p = prepare(...args);
      return p.result(p.run(false) as R);
    },
    async: async (...args: A): Promise<T> => {
      const p = prepare(...args);
      return p.result(await p.run(true));
    },
  };
}
