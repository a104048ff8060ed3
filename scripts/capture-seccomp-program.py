#!/usr/bin/env python3
"""Prints the seccomp BPF program(s) installed on a running process, as raw
`struct sock_filter` arrays written to OUT.N.bpf (N = 0 is the newest filter).

Used to capture the program runc installs for a Docker profile, against which the
agent's own filter is tested (crates/isol8-agent/src/seccomp/tests.rs):

    id=$(docker run -d --rm --security-opt seccomp=PROFILE.json \
         --security-opt no-new-privileges --entrypoint /bin/sleep isol8:bash 60)
    python3 scripts/capture-seccomp-program.py \
        "$(docker inspect -f '{{.State.Pid}}' "$id")" /tmp/runc-strict
    docker rm -f "$id"

Needs root (CAP_SYS_ADMIN: ptrace(PTRACE_SECCOMP_GET_FILTER)).
"""
import ctypes
import os
import sys

PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SECCOMP_GET_FILTER = 16, 17, 0x420C

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def main() -> None:
    pid, out = int(sys.argv[1]), sys.argv[2]
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        sys.exit(f"ptrace attach: {os.strerror(ctypes.get_errno())}")
    os.waitpid(pid, 0x40000000)  # __WALL
    try:
        index = 0
        while True:
            n = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(index), None)
            if n < 0:
                break
            buf = ctypes.create_string_buffer(8 * n)
            libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(index), buf)
            with open(f"{out}.{index}.bpf", "wb") as f:
                f.write(buf.raw)
            print(f"{out}.{index}.bpf: {n} instructions")
            index += 1
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


if __name__ == "__main__":
    main()
