// Preloaded by run.sh for the reference's server tests: `Bun.serve` for an app made by
// server-shim.ts binds nothing (our `isol8 serve` already listens on that port); every
// other call goes to the real `Bun.serve`.

const SHIMMED = Symbol.for("isol8.compat.shimmed");
const realServe = Bun.serve.bind(Bun);

// biome-ignore lint: replacing a global for the test run only
(Bun as any).serve = (options: any) => {
  if (options?.fetch?.[SHIMMED]) {
    return { port: options.port, stop() {}, reload() {} };
  }
  return realServe(options);
};
