#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (valid examples of each input) into
fuzz/seeds/<target>/. Run from anywhere; the output is committed."""
import json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

def frame(kind, payload):
    if isinstance(payload, (dict, list)):
        payload = json.dumps(payload, separators=(",", ":")).encode()
    return struct.pack(">IB", len(payload), kind) + payload

HELLO, OUTPUT, EXITED, FAILED, RESET_DONE = 0x01, 0x02, 0x03, 0x04, 0x05
EXEC, STDIN, STDIN_CLOSE, SIGNAL, RESET = 0x10, 0x11, 0x12, 0x13, 0x14

def output(stream, phase, data):
    return frame(OUTPUT, bytes([stream, phase]) + data)

def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

hello = frame(HELLO, {"protocol": 1, "agentVersion": "0.1.0"})
exited = {"exitCode": 0, "timedOut": False, "phase": "code", "durationMs": 12,
          "stdout": {"totalBytes": 6, "truncated": False},
          "stderr": {"totalBytes": 0, "truncated": False},
          "files": {"/sandbox/out.txt": "aGk="}, "fileErrors": {}}

# agent -> engine: [chunk seed][frames]
write("agent_frames", "hello_output_exited", b"\x07" + hello
      + output(1, 1, b"hello\n") + frame(EXITED, exited))
write("agent_frames", "setup_and_code_split_secret", b"\x03" + hello
      + output(1, 0, b"installing s3c") + output(1, 0, b"r3t done\n")
      + output(2, 1, "caf\u00e9 \xe2\x82".encode("latin-1")) + output(2, 1, b"\xac tok-a")
      + output(2, 1, b"b end") + frame(EXITED, dict(exited, exitCode=1, phase="code")))
write("agent_frames", "timeout_truncated", b"\x01" + hello + output(1, 1, b"x" * 300)
      + frame(EXITED, dict(exited, exitCode=137, timedOut=True,
                           stdout={"totalBytes": 9000000, "truncated": True})))
write("agent_frames", "exec_failed", b"\x20" + hello
      + frame(FAILED, {"message": "file path /sandbox/a: not a directory"}))
write("agent_frames", "reset_done", b"\x05" + frame(RESET_DONE, {"ok": True})
      + frame(RESET_DONE, {"ok": False, "problem": "a process of uid 1000 survived"}))
write("agent_frames", "invalid_utf8_output", b"\x02" + output(1, 1, b"\xff\xfe\xc3(\xf0\x28\x8c\x28"))

spec = {"protocol": 1,
        "steps": [{"phase": "setup", "argv": ["bash", "-c", "echo setup"]},
                  {"phase": "code", "argv": ["python3", "-c", "print(input())"]}],
        "env": {"HOME": "/sandbox", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", "USER": "sandbox"},
        "cwd": "/sandbox/work", "stdin": "aGVsbG8K", "interactive": False,
        "timeoutMs": 30000, "maxOutputBytes": 1048576,
        "files": [{"path": "/sandbox/data/in.txt", "content": "aGk="},
                  {"path": "/sandbox/run.sh", "content": "ZWNobyBvaw==", "mode": 493}],
        "outputPaths": ["/sandbox/out.txt"], "maxReadBytes": 16777216}

# engine -> agent: [chunk seed][frames]
write("engine_frames", "exec", b"\x09" + frame(EXEC, spec))
write("engine_frames", "interactive_exec_stdin_signal", b"\x02"
      + frame(EXEC, dict(spec, interactive=True))
      + frame(STDIN, b"line one\n") + frame(STDIN, b"") + frame(STDIN_CLOSE, b"")
      + frame(SIGNAL, {"signal": 2}))
write("engine_frames", "reset", b"\x11" + frame(RESET, {"wipe": ["/sandbox", "/tmp", "/dev/shm"]}))
write("engine_frames", "transfer", b"\x40" + frame(EXEC, dict(spec, steps=[], env={}, stdin=None)))

# POST /execute bodies
bodies = {
    "python_code": {"request": {"runtime": "python", "code": "print('hello')"}},
    "bash_cmd": {"request": {"runtime": "bash", "cmd": "ls -la /sandbox", "timeoutMs": 5000}},
    "files_and_outputs": {"request": {
        "runtime": "node", "code": "console.log(1)", "fileExtension": ".mjs",
        "files": {"data/in.txt": "x", "/sandbox/a/b/c.json": "{}"},
        "outputPaths": ["out.txt", "/sandbox/a/../r.bin"], "workdir": "work/./dir",
        "env": {"FOO": "bar", "_X1": ""}, "stdin": "input\n", "setupScript": "mkdir -p work",
        "metadata": {"user": "u1"}}},
    "options": {"request": {"runtime": "deno", "code": "console.log(Deno.version)"},
                "options": {"network": "none", "timeoutMs": 10000, "memoryLimit": "256m",
                            "cpuLimit": 0.5, "pidsLimit": 32, "readonlyRootFs": True,
                            "sandboxSize": "64m", "tmpSize": "32mb", "maxOutputSize": 65536,
                            "secrets": {"API_KEY": "s3cr3t"}, "logNetwork": False,
                            "networkFilter": {"whitelist": ["^api\\.example\\.com$"], "blacklist": []},
                            "security": {"seccomp": "strict"}, "mode": "ephemeral"}},
    "session": {"request": {"runtime": "bun", "code": "console.log(Bun.version)"},
                "sessionId": "agent-7_run.1"},
    "rejected_both": {"request": {"runtime": "python", "code": "1", "cmd": "true"}},
    "rejected_paths": {"request": {"runtime": "bash", "cmd": "true",
                                   "files": {"../etc/passwd": "x"}, "outputPaths": ["/etc/shadow"]}},
    "rejected_policy": {"request": {"runtime": "python", "code": "1"},
                        "options": {"network": "host", "image": "alpine", "persist": True,
                                    "security": {"seccomp": "unconfined", "runtime": "runsc"}}},
    "empty_objects": {"request": {"runtime": "bash", "code": "true"},
                      "options": {"security": {}, "networkFilter": {}}},
    "unlimited_limits": {"request": {"runtime": "bash", "code": "true", "timeoutMs": 86400000},
                         "options": {"cpuLimit": 4e-10, "pidsLimit": 0, "memoryLimit": "16g",
                                     "maxOutputSize": 1099511627776}},
}
for name, body in bodies.items():
    write("execute_body", name + ".json", json.dumps(body, indent=1).encode())
