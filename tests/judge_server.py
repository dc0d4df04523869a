"""A loopback OpenAI-compatible ``/chat/completions`` endpoint for the judge tests: a real HTTP
server on 127.0.0.1 whose reply the judged text picks (errors, retries, slowness, logprobs)."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JudgeEndpoint:
    """A loopback /chat/completions endpoint; the judged answer text picks the behaviour."""

    def __init__(self):
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    n_same = sum(r["messages"] == body["messages"] for r in server.requests)
                status, payload = server.reply(body, n_same)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def reply(body: dict, n_same: int) -> tuple[int, bytes]:
        text = body["messages"][0]["content"]
        if "FAIL500" in text:
            return 500, b'{"error": "boom"}'
        if "FLAKY" in text and n_same == 1:
            return 503, b'{"error": "busy"}'
        if "SLOW" in text:
            time.sleep(1.5)
        if "MALFORMED" in text:
            return 200, b'{"choices": [{"message": {"content": null}'
        if "NOCHOICES" in text:
            return 200, b'{"object": "chat.completion", "choices": []}'
        if body["model"] == "no-logprobs" and body.get("logprobs"):
            return 400, b'{"error": "logprobs are not supported by this model"}'
        if "PLAIN" in text or not body.get("logprobs"):
            return 200, json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": "Severity: 3"}}]}
            ).encode()
        top = [("2", 0.6), (" 1", 0.3), ("x", 0.1)]
        if "Answer with a single letter" in text:
            top = [("C", 0.7), ("A", 0.2), ("?", 0.1)]
        logprobs = {
            "content": [
                {
                    "token": top[0][0],
                    "logprob": math.log(top[0][1]),
                    "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in top],
                }
            ]
        }
        return 200, json.dumps(
            {
                "choices": [
                    {"message": {"role": "assistant", "content": top[0][0]}, "logprobs": logprobs}
                ]
            }
        ).encode()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
