#!/usr/bin/env python3
"""A local OTLP/HTTP sink for benchmarking telemetry: answers 200 to every POST (as a collector
does) on 127.0.0.1 and counts the requests and bytes it got, printing them at exit.

    python3 bench/otlp_sink.py PORT        # then P2P_TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:PORT
"""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        received["requests"] += 1
        received["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args):
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(*_args):
        print(f"otlp sink: {received['requests']} export requests, {received['bytes']} bytes", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
