"""A scripted OpenAI-compatible model server for the agent runtime's Docker tests
(started by `isol8_testkit::model_stub::ModelStub`), served over HTTPS on a loopback
address of the host.

Usage: agent_stub.py ADDR PORT CERT_PEM KEY_PEM CALLS_LOG FILE_PATH FILE_TEXT FINAL

The first chat-completions call is answered (as a server-sent-event stream) with one
tool call of pi's `write` tool putting FILE_TEXT at FILE_PATH; every later call with the
final message FINAL followed by the API key the call carried (so the test can check that
the key is masked in the sandbox's output). Each call is appended to CALLS_LOG as one
JSON line: {"authorization": ..., "body": ...}. Prints "ready" once it listens.
"""

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR, PORT, CERT, KEY, LOG, FILE_PATH, FILE_TEXT, FINAL = sys.argv[1:9]
LOCK = threading.Lock()
CALLS = [0]


def chunk(delta, finish=None):
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def answer(n, authorization):
    if n == 0:
        args = json.dumps({"path": FILE_PATH, "content": FILE_TEXT})
        call = {
            "index": 0,
            "id": "call_stub_1",
            "type": "function",
            "function": {"name": "write", "arguments": args},
        }
        chunks = [
            chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
            chunk({}, "tool_calls"),
        ]
    else:
        key = authorization.removeprefix("Bearer ")
        chunks = [
            chunk({"role": "assistant", "content": f"{FINAL} {key}"}),
            chunk({}, "stop"),
        ]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if not self.path.endswith("/chat/completions"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        authorization = self.headers.get("Authorization", "")
        with LOCK:
            n = CALLS[0]
            CALLS[0] += 1
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            with open(LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps({"authorization": authorization, "body": parsed}) + "\n")
        data = answer(n, authorization).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((ADDR, int(PORT)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
