"""A local HTTP receiver standing in for a DingTalk robot / generic webhook; verifies DingTalk signatures."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Receiver:
    def __init__(self, secret: str = "", max_skew_ms: int = 3600 * 1000):
        self.secret = secret
        self.max_skew_ms = max_skew_ms
        self.requests: list[dict] = []
        self.rejected: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                query = parse_qs(urlparse(self.path).query)
                problem = receiver.check(query)
                if problem:
                    receiver.rejected.append(problem)
                    answer = {"errcode": 310000, "errmsg": problem}
                else:
                    receiver.requests.append({"path": self.path, "query": query, "body": body})
                    answer = {"errcode": 0, "errmsg": "ok"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/robot/send?access_token=test-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def check(self, query: dict) -> str:
        """DingTalk's rule: sign = base64(HMAC-SHA256(secret, "{timestamp}\\n{secret}")), timestamp within 1 h."""
        if not self.secret:
            return ""
        try:
            timestamp = query["timestamp"][0]
            sign = query["sign"][0]  # parse_qs already URL-decoded it
        except (KeyError, IndexError):
            return "missing timestamp/sign"
        if abs(int(time.time() * 1000) - int(timestamp)) > self.max_skew_ms:
            return "timestamp too old"
        expected = base64.b64encode(
            hmac.new(self.secret.encode(), f"{timestamp}\n{self.secret}".encode(), hashlib.sha256).digest()
        ).decode()
        return "" if hmac.compare_digest(expected, sign) else "bad signature"

    def wait_for(self, count: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
