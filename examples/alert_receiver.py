#!/usr/bin/env python3
"""A webhook receiver for godown's low-stock alerts: verifies each delivery's signature,
ignores repeats (delivery is at least once), and prints one line per alert. Replace
`notify` with a POST to your SMS or e-mail gateway to get the alert on a phone.

    python3 examples/alert_receiver.py --port 9000 --secret whsec_...

Standard library only. Register it with:

    curl -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
      http://127.0.0.1:8000/api/v1/stores/$STORE/webhooks \
      -d '{"url":"http://127.0.0.1:9000/","events":["stock.low"],"secret":"whsec_..."}'
"""
import argparse, hashlib, hmac, json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_S = 300  # refuse signatures older than this (replayed requests)


def verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


def notify(event: dict) -> None:
    d = event["data"]
    name = d.get("product_name") or d["product_id"]
    print(f"LOW STOCK {event['store_id']}: {name} has {d['current_stock']} left "
          f"(alert at {d['low_stock_threshold']}) [event {event['id']}]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--secret", required=True)
    args = ap.parse_args()
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not verify(args.secret, self.headers.get("Godown-Signature", ""), body):
                self.send_response(401)
                self.end_headers()
                return
            event_id = self.headers.get("Godown-Event-Id", "")
            if event_id not in seen:
                seen.add(event_id)
                event = json.loads(body)
                if event["type"] == "stock.low":
                    notify(event)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_) -> None:
            pass

    server = HTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
