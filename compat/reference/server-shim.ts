// `createServer` with the signature the reference's server tests import from
// `apps/server/src/index.ts`, backed by our `isol8 serve` as a child process. run.sh copies
// this file over that module in a scratch copy of the reference, so the tests talk to our
// server over real HTTP and WebSocket on the port they choose.
//
// The tests then call `Bun.serve({ fetch: server.app.fetch, ... })` on the same port; the
// preload (serve-preload.ts) turns that call into a no-op for the marked `fetch` below,
// since our process already listens there.

import { type ChildProcess, spawn } from "node:child_process";

/** Marks the `fetch` of a shimmed app, so the preload knows not to bind its port. */
export const SHIMMED = Symbol.for("isol8.compat.shimmed");

export interface ServerOptions {
  port: number;
  apiKey: string;
  debug?: boolean;
  authDbPath?: string;
}

async function waitForHealth(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`isol8 serve exited with ${child.exitCode} before answering`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await Bun.sleep(100);
  }
  throw new Error(`isol8 serve did not answer /health on port ${port} within 30 s`);
}

export async function createServer(options: ServerOptions) {
  const bin = process.env.ISOL8_BIN ?? "isol8";
  const args = ["serve", "--port", String(options.port)];
  if (options.authDbPath) args.push("--auth-db", options.authDbPath);
  if (options.debug) args.push("--verbose");
  const child = spawn(bin, args, {
    env: { ...process.env, ISOL8_API_KEY: options.apiKey },
    stdio: ["ignore", "inherit", "inherit"],
  });
  await waitForHealth(options.port, child);
  const fetchMarked = Object.assign(
    () => new Response("served by isol8 serve, not by this process", { status: 500 }),
    { [SHIMMED]: true }
  );
  return {
    app: { fetch: fetchMarked },
    websocket: {},
    async shutdown(_cleanup?: boolean) {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}
