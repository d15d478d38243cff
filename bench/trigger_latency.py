#!/usr/bin/env python3
"""Hook POST -> epoch frozen latency, as seen from a client on the same host.

For each of N triggers: read CLOCK_MONOTONIC, POST /v1/trigger (a kept-alive connection, a
distinct URL each time), wait until GET /v1/snapshots/{id} says written, and read the
snapshot's manifest: frozen_monotonic_ns - the send time is the trigger-to-freeze latency (the
same clock: the event timebase is CLOCK_MONOTONIC). Prints p50, p90, p99 and max.

Usage: trigger_latency.py HOST:PORT TOKEN N
"""
import http.client
import json
import struct
import sys
import time


def manifest(path):
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:8] != b"FLTRSNAP":
            raise SystemExit(f"{path}: not a flightrec snapshot")
        (length,) = struct.unpack_from("<Q", head, 16)
        return json.loads(f.read(length))


def main():
    addr, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lat, rtt = [], []
    for i in range(n):
        body = json.dumps({"reason": "latency bench", "url": f"/bench/{i}"})
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        conn.request("POST", "/v1/trigger", body, headers)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        rtt.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC) - t0)
        if resp.status != 202 or answer.get("joined"):
            raise SystemExit(f"trigger {i}: {resp.status} {answer}")
        while True:
            conn.request("GET", answer["status_url"], headers=headers)
            r = conn.getresponse()
            state = json.loads(r.read())
            if state["state"] == "written":
                break
            if state["state"] != "pending":
                raise SystemExit(f"trigger {i}: {state}")
            time.sleep(0.002)
        lat.append(manifest(state["path"])["frozen_monotonic_ns"] - t0)

    def pct(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    for name, xs in (("hook POST -> frozen", lat), ("hook POST round trip", rtt)):
        print(
            f"{name:22} n={len(xs)} p50={pct(xs, 50) / 1e3:.0f} us p90={pct(xs, 90) / 1e3:.0f} us "
            f"p99={pct(xs, 99) / 1e3:.0f} us max={max(xs) / 1e3:.0f} us"
        )


if __name__ == "__main__":
    main()
