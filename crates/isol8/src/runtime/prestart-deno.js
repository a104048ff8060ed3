// The loader of isol8's pre-started Deno (see isol8_protocol::agent::PrestartSpec).
//
// Started as `deno run <the runtime's permissions> --preload <this file>
// /sandbox/main.mts`. Deno evaluates preloads before it reads the main module, so when
// this file runs Deno has done its start-up (V8 and its snapshot, permissions, the module
// loader). The loader writes its ready byte to stdout and reads the request from stdin
// until end of file (Deno offers no way to use another descriptor by number without
// `--allow-all`); meanwhile the agent writes the execution's /sandbox/main.mts. It then
// replaces the environment with the request's and ends, and Deno loads and runs the main
// module as `deno run` would: its own module loading, transpiling, stack traces and exit
// codes. The request's code field is the main module's path, already on the command line.
//
// What the program can tell (docs/SECURITY.md): its command line, its start time, and
// that its stdin is an empty pipe rather than /dev/null.
Deno.stdout.writeSync(new Uint8Array([0x72]));
const chunks = [];
let size = 0;
for (;;) {
  const buffer = new Uint8Array(1 << 16);
  const n = Deno.stdin.readSync(buffer);
  if (n === null) break;
  chunks.push(buffer.subarray(0, n));
  size += n;
}
const request = new Uint8Array(size);
size = 0;
for (const chunk of chunks) {
  request.set(chunk, size);
  size += chunk.length;
}
const decoder = new TextDecoder();
let at = 0;
const field = () => {
  const end = request.indexOf(0, at);
  // No complete request: the agent gave up on this process.
  if (end < 0) Deno.exit(70);
  const text = decoder.decode(request.subarray(at, end));
  at = end + 1;
  return text;
};
field();
const count = Number(field());
const environment = [];
for (let i = 0; i < count; i++) environment.push(field());
const wanted = new Map(environment.map((entry) => {
  const eq = entry.indexOf('=');
  return [entry.slice(0, eq), entry.slice(eq + 1)];
}));
// A `DENO_*` variable the request lacks was set by Deno itself while it started (such as
// `DENO_NODE_SHIM_ACTIVE`), as it would be in a fresh process: the request's own
// `DENO_*` are the ones this process started with, or it would not have been handed it.
const current = Deno.env.toObject();
for (const key of Object.keys(current)) {
  if (!wanted.has(key) && !key.startsWith('DENO_')) Deno.env.delete(key);
}
// A variable that already has its value is left alone (setting it again changes nothing,
// not even its place in the environment, and costs a call into Deno per variable).
for (const [key, value] of wanted) {
  if (!Object.hasOwn(current, key) || current[key] !== value) Deno.env.set(key, value);
}
