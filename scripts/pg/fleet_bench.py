#!/usr/bin/env python3
"""Fleet benchmark: jobs completed per second with 1, 2 and 4 worker processes on one PostgreSQL,
and the failover time after `kill -9` of the worker running a job.

    url=$(bash scripts/pg/cluster.sh start /tmp/sc-pg)
    python3 scripts/pg/fleet_bench.py --bin target/debug/soundcheck --admin-url "$url"

For each worker count: a fresh database, one API node (`serve --workers 0`), a webhook receiver;
JOBS short analysis jobs (0.5 s WAVs, CPU-light) are submitted first, then the workers start, and
the clock runs from their start to the last `job.completed` webhook (one per job: every node's
dispatcher shares the outbox). Figures are printed; BENCHMARKS.md records them with this command.
Needs only the standard library and `psql` (Debian's postgresql-client, installed with postgresql).
"""

import argparse
import http.server
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav(seconds=0.5, rate=22050):
    n = int(seconds * rate)
    data = b"".join(struct.pack("<h", int(8000 * ((i // 50) % 2 * 2 - 1))) for i in range(n))
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" +
            struct.pack("<I", len(data)) + data)


def multipart(audio):
    boundary = "fleetbench" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


class Receiver:
    """Counts job.completed webhooks per job id."""

    def __init__(self):
        self.done = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event = json.loads(body)
                with outer.lock:
                    outer.done.setdefault(event["data"]["job_id"], time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self):
        with self.lock:
            return len(self.done)


def scratch_db(admin):
    name = "bench_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    return admin.split("?", 1)[0].rsplit("/", 1)[0] + "/" + name


def start(bin_, args, data_dir, banner_end):
    env = dict(os.environ, SOUNDCHECK_LOG="warn", XDG_RUNTIME_DIR=os.path.join(data_dir, "run"),
               XDG_STATE_HOME=os.path.join(data_dir, "state"))
    p = subprocess.Popen([bin_] + args + ["--data-dir", data_dir], stdout=subprocess.PIPE,
                         text=True, env=env)
    key = None
    for line in p.stdout:
        if line.startswith("SOUNDCHECK_TL_KEY="):
            key = line.strip().split("=", 1)[1]
        if banner_end(line):
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, key


def run(bin_, admin, workers, jobs, lease):
    db = scratch_db(admin)
    tmp = tempfile.mkdtemp(prefix="sc-fleet-")
    media = os.path.join(tmp, "media")
    rx = Receiver()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    common = ["--database", db, "--media-dir", media, "--public-url", base,
              "--lease-secs", str(lease)]
    api, key = start(bin_, ["serve", "--addr", f"127.0.0.1:{port}", "--workers", "0",
                            "--webhook-url", rx.url] + common,
                     os.path.join(tmp, "api"), lambda l: l.startswith("next:"))
    ctype, body = multipart(wav())

    def submit(headers=None):
        req = urllib.request.Request(f"{base}/v1/analyze/upload", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": ctype, **(headers or {})})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())["job_id"]

    procs = [api]
    try:
        for _ in range(jobs):
            submit()
        t0 = time.monotonic()
        for w in range(workers):
            p, _ = start(bin_, ["worker", "--workers", "1"] + common,
                         os.path.join(tmp, f"w{w}"), lambda l: "workers on the shared database" in l)
            procs.append(p)
        while rx.count() < jobs:
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"only {rx.count()}/{jobs} jobs completed in 600 s")
            time.sleep(0.02)
        rate = jobs / (max(rx.done.values()) - t0)
        failover = None
        if workers == 2:
            # Leave one worker, give it a 3 s job, kill -9 it 1 s in and start a fresh worker: the
            # clock runs from the kill to the job's webhook (lease expiry, the sweep, the re-run).
            procs[2].kill()
            procs[2].wait()
            job = submit({"X-Soundcheck-Fault": "delay=3000"})
            time.sleep(1.0)
            procs[1].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            p, _ = start(bin_, ["worker", "--workers", "1"] + common,
                         os.path.join(tmp, "w-next"), lambda l: "workers on the shared database" in l)
            procs.append(p)
            while job not in rx.done:
                if time.monotonic() - killed > 120:
                    raise SystemExit("the killed worker's job never completed")
                time.sleep(0.02)
            failover = rx.done[job] - killed
        return rate, failover
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--admin-url", required=True)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--lease", type=int, default=6)
    args = ap.parse_args()
    print(f"{args.jobs} analysis jobs (0.5 s WAV) per run, lease {args.lease} s, {os.cpu_count()} cores")
    base = None
    for workers in (1, 2, 4):
        rate, failover = run(args.bin, args.admin_url, workers, args.jobs, args.lease)
        base = base or rate
        print(f"{workers} worker process(es): {rate:.1f} jobs/s ({rate / base:.2f}x one worker)")
        if failover is not None:
            print(f"  failover: kill -9 of the worker 1 s into a 3 s job -> job.completed on a new worker "
                  f"after {failover:.1f} s (lease {args.lease} s, swept every {args.lease / 2:g} s, then the 3 s re-run)")


if __name__ == "__main__":
    main()
