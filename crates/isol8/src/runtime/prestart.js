// The loader of isol8's pre-started Node.js (see isol8_protocol::agent::PrestartSpec).
//
// Started as `node --require <this file> --eval ''`, so Node.js does all of its start-up
// for an `-e` program; this file is the preload, which runs inside that start-up just
// before `internal/main/eval_string` reads the `--eval` option and evaluates it. Here the
// loader waits for the program on descriptor 100, then sets the `--eval` option's value
// to the program's code and returns: Node.js itself evaluates it, with its own wrapper,
// stack frames, exit codes and error printing, exactly as `node -e <code>` would.
//
// The option's value lives in a variable of Node.js's internal `internal/options` module
// (`optionsDict`), which no public API reaches. The loader reaches it through the V8
// inspector protocol on an in-process session (`Runtime.getProperties` lists a function's
// `[[Scopes]]`, and those scopes' variables; `Runtime.callFunctionOn` makes a function
// that assigns it), then disconnects before it waits. Nothing of this stays visible to
// the program, with four documented exceptions (docs/SECURITY.md): /proc/self/cmdline
// (and a diagnostic report's command line) and, inside worker threads,
// `process.execArgv` show the waiting process's flags, `process.moduleLoadList` lists
// the modules loaded ahead (below) from the start, and `process`'s prototype holds the
// quick way out's `emit` accessor (at the end).
//
// Before the program runs it also undoes what the preload itself left behind: its entry
// in `require.cache` and the module path cache, the `--require` list (the same array as
// `process._preload_modules`), `process.execArgv` (`['-e', code]`, as Node.js sets it),
// `process._eval` (defined where start-up defines it, so the order of `process`'s keys is
// unchanged), the environment (the request's, exactly), and descriptors 100 to 102.
// Worker threads inherit the preload: there it only removes itself.
'use strict';
{
  const inWorker = process.chdir.name === 'unavailableInWorker';
  process._preload_modules.length = 0;
  delete require.cache[__filename];
  if (!inWorker) {
    const fs = require('fs');
    const Module = require('module');
    const REQUEST = 100;
    const STDIN = 101;
    const READY = 102;
    for (const key of Object.keys(Module._pathCache)) {
      if (key.startsWith(__filename)) delete Module._pathCache[key];
    }

    // An in-process inspector session; replies arrive synchronously, during dispatch.
    const { Connection } = process.binding('inspector');
    let lastId = 0;
    let reply;
    const session = new Connection((message) => {
      reply = JSON.parse(message);
    });
    const post = (method, params) => {
      const id = ++lastId;
      reply = undefined;
      session.dispatch(JSON.stringify({ id, method, params }));
      if (!reply || reply.id !== id || reply.error) {
        throw new Error(`isol8 pre-start: ${method} failed: ${JSON.stringify(reply)}`);
      }
      return reply.result;
    };
    // The remote object id of variable `name` in the closure of the function `objectId`.
    const closureVariable = (objectId, name) => {
      const scopes = post('Runtime.getProperties', { objectId, ownProperties: true })
        .internalProperties.find((p) => p.name === '[[Scopes]]').value.objectId;
      for (const scope of post('Runtime.getProperties', { objectId: scopes, ownProperties: true }).result) {
        const found = post('Runtime.getProperties', { objectId: scope.value.objectId, ownProperties: true })
          .result.find((v) => v.name === name);
        if (found) return found.value.objectId;
      }
      throw new Error(`isol8 pre-start: no variable ${name}`);
    };
    // The CommonJS loader's closure holds `getOptionValue`, whose closure holds the
    // options (already read from C++ and cached by then).
    globalThis.__isol8_prestart = Module._load;
    const load = post('Runtime.evaluate', { expression: 'globalThis.__isol8_prestart' }).result.objectId;
    delete globalThis.__isol8_prestart;
    const options = closureVariable(closureVariable(load, 'getOptionValue'), 'optionsDict');
    // A function that sets the option, made now so that the hand-over is a plain call
    // (a `Runtime.callFunctionOn` then took about 0.3 ms); the session ends before the
    // loader waits.
    post('Runtime.callFunctionOn', {
      objectId: options,
      functionDeclaration:
        'function () { const options = this; globalThis.__isol8_prestart = (code) => { options["--eval"] = code; }; }',
    });
    const setEval = globalThis.__isol8_prestart;
    delete globalThis.__isol8_prestart;
    session.disconnect();

    // Node.js loads its stream and socket modules when a program first touches
    // `process.stdout` (a pipe here), about 3.5 ms of a one-line program's warm run;
    // loaded now, they are already there. The one trace: `process.moduleLoadList`
    // lists them from the start, where a fresh `node -e` lists them after that first
    // use (docs/SECURITY.md).
    const net = require('net');

    // V8 compiles a function the first time it is called, so the first `process.stdout`
    // (a socket on a pipe here) and its first write cost about 1.2 ms of a one-line
    // program's warm run, mostly compiling stream and socket code. The loader runs that
    // code once now, on a socket over a stand-in handle that takes each write as pending
    // and completes it at once: nothing is opened (a real pipe handle would open a
    // descriptor and be listed among the active handles), no asynchronous id is taken
    // (the stand-in has its own), no tick is queued (a write that completes later does
    // not defer its callback) and the socket is left to the garbage collector. The
    // program's own `process.stdout` is created on first use as in a fresh process.
    {
      const { streamBaseState, kLastWriteWasAsync } = process.binding('stream_wrap');
      const pending = [];
      const write = (req) => {
        pending.push(req);
        streamBaseState[kLastWriteWasAsync] = 1;
        return 0;
      };
      // What a write-only socket calls on its handle for a string and a Buffer.
      const handle = { getAsyncId: () => -1, writeUtf8String: write, writeBuffer: write };
      const socket = new net.Socket({ handle, readable: false, writable: true });
      for (const chunk of ['1\n', Buffer.from('1\n')]) {
        socket.write(chunk);
        for (const req of pending.splice(0)) req.oncomplete(0);
      }
      streamBaseState[kLastWriteWasAsync] = 0;
    }

    // The environment as this process has it, in order: a request whose environment is
    // exactly this (the usual case) leaves it as it is, which saves a system call per
    // variable.
    const startupEnvironment = Object.entries(process.env).map(([key, value]) => `${key}=${value}`);

    fs.writeSync(READY, 'r');
    fs.closeSync(READY);
    const chunks = [];
    const buffer = Buffer.allocUnsafe(1 << 16);
    for (let n; (n = fs.readSync(REQUEST, buffer, 0, buffer.length, null)) !== 0;) {
      chunks.push(Buffer.from(buffer.subarray(0, n)));
    }
    fs.closeSync(REQUEST);
    // Stdin stays /dev/null: this loader is never handed an execution that feeds stdin
    // (Node.js cannot move a descriptor to 0).
    fs.closeSync(STDIN);
    const request = Buffer.concat(chunks);
    let at = 0;
    const field = () => {
      const end = request.indexOf(0, at);
      // No complete request: the agent gave up on this process.
      if (end < 0) process.reallyExit(70);
      const text = request.toString('utf8', at, end);
      at = end + 1;
      return text;
    };
    field();
    const count = Number(field());
    const environment = [];
    for (let i = 0; i < count; i++) environment.push(field());
    const code = request.toString('utf8', at);
    const unchanged =
      environment.length === startupEnvironment.length &&
      environment.every((entry, i) => entry === startupEnvironment[i]);
    if (!unchanged) {
      for (const key of Object.keys(process.env)) delete process.env[key];
      for (const entry of environment) {
        const eq = entry.indexOf('=');
        process.env[entry.slice(0, eq)] = entry.slice(eq + 1);
      }
    }

    setEval(code);
    process.execArgv = ['-e', code];
    const names = Object.getOwnPropertyNames(process);
    const later = names
      .slice(names.indexOf('_preload_modules'))
      .map((key) => [key, Object.getOwnPropertyDescriptor(process, key)]);
    for (const [key] of later) delete process[key];
    Object.defineProperty(process, '_eval', {
      __proto__: null,
      writable: false,
      configurable: true,
      enumerable: true,
      value: code,
    });
    for (const [key, descriptor] of later) Object.defineProperty(process, key, descriptor);

    // The quick way out. When a program ends because nothing is left to do, Node.js
    // emits `exit`, then frees the whole environment and the V8 heap, page by page, before
    // the process can exit: about 2–3 ms of a one-line program's warm run. `process.exit`
    // skips that (the kernel frees the memory at once, after the exit is reported, see
    // the teardown library). Node.js looks up `process.emit` to emit `exit`; a getter on
    // `process`'s prototype (which has no other property but `constructor`) sees that
    // lookup and leaves through `process.reallyExit` (what `process.exit` ends in) when
    // nothing else could run after it: the exit code is 0 (the uncaught-exception path,
    // which prints its error only after `exit`, always sets 1), no `exit` listener is
    // registered (none can queue work), `emit` and `process.reallyExit` are Node.js's own
    // (libraries such as signal-exit replace them to run code after `exit`; an own
    // `process.emit` hides the getter), no native addon is loaded and `node:sqlite` is
    // not (cleanup hooks run only on the way out that frees the environment: an addon's,
    // and the one that closes a database left open, which in WAL mode moves the log into
    // the database file and removes it). Otherwise, and for every lookup before the
    // process is exiting, the getter returns what the prototype chain above it holds, so
    // `process.emit` is what it is in a fresh process and no stack frame of the loader's
    // is added. An assignment to `process.emit` makes an own property, as it would
    // without the getter.
    const proto = Object.getPrototypeOf(process);
    const above = Object.getPrototypeOf(proto);
    const emit = process.emit;
    const reallyExit = process.reallyExit;
    const loaded = process.moduleLoadList;
    const quickExit = () =>
      process._exiting === true &&
      (process.exitCode ?? 0) === 0 &&
      process.listenerCount('exit') === 0 &&
      above.emit === emit &&
      process.reallyExit === reallyExit &&
      !Object.keys(Module._cache).some((path) => path.endsWith('.node')) &&
      !loaded.includes('Internal Binding sqlite');
    Object.defineProperty(proto, 'emit', {
      __proto__: null,
      configurable: true,
      enumerable: false,
      get() {
        if (this === process && quickExit()) reallyExit(0);
        return Reflect.get(above, 'emit', this);
      },
      set(value) {
        Reflect.defineProperty(this, 'emit', {
          __proto__: null,
          value,
          writable: true,
          configurable: true,
          enumerable: true,
        });
      },
    });
  }
}
