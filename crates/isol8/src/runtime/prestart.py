# The loader of isol8's pre-started Python (see isol8_protocol::agent::PrestartSpec).
# Started as `python3 -c <this>`, it waits for the program on descriptor 3, then runs it
# as `python3 -c <code>` would: through the C API's PyRun_SimpleStringFlags with the
# flags `-c` uses (coding cookies ignored), in a copy of the untouched `__main__`, so exit
# codes, SystemExit, KeyboardInterrupt and tracebacks are the interpreter's own. Everything
# it adds while starting (_ctypes, import caches, its own name) is removed before the
# program runs; descriptors 3, 4 and 5 are closed.
def _isol8_prestart():
    import sys, os
    modules, finders = dict(sys.modules), dict(sys.path_importer_cache)
    # `_ctypes` alone, not the `ctypes` package: importing that took 1.3-1.8 ms more of
    # every start's CPU (its own module, `struct`, `types`). What is used below is what
    # `ctypes.pythonapi.PyRun_SimpleStringFlags` is made of: `PyDLL(None)` opens the
    # program itself with RTLD_LOCAL, and its functions are cdecl and flagged as calls
    # into the Python API (the GIL held, the error indicator checked afterwards).
    import _ctypes, gc
    freeze = gc.freeze
    class c_int(_ctypes._SimpleCData):
        _type_ = "i"
    class c_char_p(_ctypes._SimpleCData):
        _type_ = "z"
    class Flags(_ctypes.Structure):
        _fields_ = [("cf_flags", c_int), ("cf_feature_version", c_int)]
    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_PYTHONAPI
        _restype_ = c_int
    class Program:
        _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)
    run = Function(("PyRun_SimpleStringFlags", Program))
    run.argtypes = [c_char_p, _ctypes.POINTER(Flags)]
    # PyCF_IGNORE_COOKIE, as `-c` compiles; the feature version is the interpreter's.
    flags = _ctypes.pointer(Flags(0x0800, sys.version_info[1]))
    del _ctypes, gc, c_int, c_char_p, Flags, Function, Program
    sys.modules.clear()
    sys.modules.update(modules)
    sys.path_importer_cache.clear()
    sys.path_importer_cache.update(finders)
    del modules, finders
    del globals()["_isol8_prestart"]
    # Everything alive now is the interpreter's start-up (and this loader's): frozen
    # before the request, the collector never traverses it again, which takes ~1.5 ms off
    # the interpreter's exit (its collections at shutdown). The program gets a `__main__`
    # made after the freeze, a copy of the untouched one, so its globals are collected at
    # exit as in a fresh interpreter (their finalisers run while `sys.stdout` works).
    freeze()
    main = type(sys)("__main__")
    vars(main).update(globals())
    sys.modules["__main__"] = main
    del main, freeze
    # Ready: the agent answers the engine's Prestart now.
    os.write(5, b"r")
    os.close(5)
    chunks = []
    while True:
        chunk = os.read(3, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(3)
    fields = b"".join(chunks).split(b"\0")
    del chunks
    if len(fields) < 3:
        # No complete request: the agent gave up on this process.
        os._exit(70)
    if fields[0] == b"1":
        os.dup2(4, 0)
    os.close(4)
    count = int(fields[1])
    environ = os.environb
    for key in list(environ):
        del environ[key]
    for pair in fields[2:2 + count]:
        key, _, value = pair.partition(b"=")
        environ[key] = value
    code = b"\0".join(fields[2 + count:])
    del fields, environ, count, chunk
    sys.orig_argv[-1] = code.decode("utf-8", "surrogateescape")
    if run(code, flags) != 0 and getattr(sys, "last_type", None) is not KeyboardInterrupt:
        # The traceback is printed; end as `-c` does after an uncaught exception.
        raise SystemExit(1)
_isol8_prestart()
