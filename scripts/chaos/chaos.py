#!/usr/bin/env python3
"""Chaos test of soundcheck (issue 14, item 9), driving the real binary.

Mixed load (uploads to every job endpoint, generations, polls) against `soundcheck serve`, with a
local webhook receiver that answers 500 to about a third of deliveries; the server is killed with
SIGKILL at seeded random moments and restarted on the same data directory; once, a second `serve`
is started against that data directory while the first runs; once, the data directory's tmpfs is
filled until writes fail and then freed. At the end (after a clean restart and a bounded wait) it
asserts the invariants listed in README.md beside this file, prints a summary and exits non-zero
if any is violated.

Only the standard library; only loopback traffic. Usage:
    python3 scripts/chaos/chaos.py --bin target/debug/soundcheck [--seed 1] [--kills 10]
"""

from __future__ import annotations

import argparse
import collections
import errno
import hashlib
import hmac
import http.client
import http.server
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import wave

JOB_ENDPOINTS = ["/v1/separate", "/v1/transcribe", "/v1/master", "/v1/analyze/upload"]
PRICES = {"/v1/separate": 10, "/v1/transcribe": 8, "/v1/master": 6, "/v1/analyze/upload": 2}
STARTING_CREDITS = 1000  # README "Credits": a new data directory starts with 1,000
TOP_UP = 100_000  # granted once through POST /v1/credits before any load, so no 402 interferes
FINAL = ("completed", "failed")
HTTP_TIMEOUT = 30.0  # a request not answered within this is a hang
BOUNDARY = "soundcheckChaosBoundary7MA4YWxkTrZu0gW"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# HTTP client (stdlib only)


class Down(Exception):
    """The server could not be reached (refused, reset, closed): it is down or being killed."""


class Hang(Exception):
    """The server accepted the connection but did not answer within HTTP_TIMEOUT."""


def request(base: str, method: str, path: str, headers=None, body=None, timeout=HTTP_TIMEOUT):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    except (socket.timeout, TimeoutError) as e:
        raise Hang(f"{method} {path}: no answer within {timeout:.0f} s") from e
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        raise Down(f"{method} {path}: {type(e).__name__}: {e}") from e
    finally:
        conn.close()


def as_json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return None


def envelope_ok(data: bytes) -> bool:
    """The README's error envelope: {"error": {"code", "message", "trace_id"}}."""
    j = as_json(data)
    if not isinstance(j, dict) or not isinstance(j.get("error"), dict):
        return False
    e = j["error"]
    return all(isinstance(e.get(k), str) and e.get(k) for k in ("code", "message", "trace_id"))


def multipart(fields: dict, filename: str, audio: bytes):
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    out.write(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
    )
    out.write(audio)
    out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={BOUNDARY}"


def make_wavs(rng: random.Random, count: int):
    """Small seeded WAVs: a chord of sines with a click every beat; mostly 22.05 kHz mono."""
    wavs = []
    for i in range(count):
        rate, channels = (44100, 2) if i == 0 else (22050, 1 + (i % 2))
        secs = rng.uniform(1.0, 1.3) if i == 0 else rng.uniform(1.2, 2.0)
        freqs = [rng.choice([110.0, 146.83, 196.0, 220.0, 261.63]) * r for r in (1.0, 1.26, 1.5)]
        beat = 60.0 / rng.choice([90, 100, 120, 128])
        n = int(secs * rate)
        frames = bytearray()
        for j in range(n):
            t = j / rate
            s = sum(math.sin(2 * math.pi * f * t) for f in freqs) * 0.18
            if (t % beat) < 0.01:
                s += 0.4 * (1 - (t % beat) / 0.01) * (1 if j % 2 else -1)
            v = max(-32767, min(32767, int(s * 32767)))
            frames += v.to_bytes(2, "little", signed=True) * channels
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(bytes(frames))
        wavs.append(buf.getvalue())
    return wavs


# ---------------------------------------------------------------------------------------------
# Webhook receiver


class Receiver:
    """http.server on 127.0.0.1 that records every request and answers 500 to a seeded ~third."""

    def __init__(self, seed: int, fail_fraction: float):
        self.rng = random.Random(seed)
        self.fail_fraction = fail_fraction
        self.lock = threading.Lock()
        self.got: list[dict] = []
        self.secret: str | None = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                status = outer.record(self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def record(self, path, headers, body) -> int:
        j = as_json(body) or {}
        if path.startswith("/jobs"):
            subject = (j.get("data") or {}).get("job_id")
        else:
            subject = j.get("id")
        sig = headers.get("X-TuneLab-Signature")
        with self.lock:
            status = 500 if self.rng.random() < self.fail_fraction else 200
            verified = None
            if sig is not None and self.secret:
                parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
                mac = hmac.new(self.secret.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256)
                verified = hmac.compare_digest(mac.hexdigest(), parts.get("v1", ""))
            self.got.append(
                {
                    "path": path,
                    "subject": subject,
                    "event": headers.get("X-TuneLab-Event") or j.get("status"),
                    "event_id": headers.get("X-TuneLab-Event-Id"),
                    "signed": sig is not None,
                    "verified": verified,
                    "status": status,
                    "at": time.time(),
                }
            )
        return status

    def start(self):
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def snapshot(self):
        with self.lock:
            return list(self.got)


# ---------------------------------------------------------------------------------------------
# The server under test


def isolated_env(home):
    """This environment with HOME and the XDG directories under `home`, and no soundcheck
    settings: `serve` records itself in the runtime directory, and nothing of a run may touch
    the user's real home (or find their running servers)."""
    env = dict(os.environ, HOME=home)
    for var, sub in (("XDG_RUNTIME_DIR", "run"), ("XDG_STATE_HOME", "state"),
                     ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config")):
        env[var] = os.path.join(home, sub)
        os.makedirs(env[var], mode=0o700, exist_ok=True)
    for k in ("SOUNDCHECK_FT_KEY", "SOUNDCHECK_TL_KEY", "SOUNDCHECK_WEBHOOK_SECRET",
              "SOUNDCHECK_WEBHOOK_URL", "SOUNDCHECK_DATA_DIR", "SOUNDCHECK_ADDR", "SOUNDCHECK_URL"):
        env.pop(k, None)
    return env


class Server:
    """One `soundcheck serve` incarnation after another on the same data directory."""

    def __init__(self, binary, data_dir, log_dir, home, args):
        self.binary = binary
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.home = home
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.incarnation = 0
        self.base = None
        self.keys: dict[str, str] = {}
        self.logs: list[str] = []
        self.all_procs: list[subprocess.Popen] = []

    def cmd(self):
        return [
            self.binary, "serve", "--addr", "127.0.0.1:0", "--data-dir", self.data_dir,
            "--time-scale", "0.001", "--webhook-timeout", "2", "--workers", "2",
        ] + self.args

    def spawn(self, label):
        path = os.path.join(self.log_dir, f"serve-{label}.log")
        f = open(path, "wb")
        env = isolated_env(self.home)
        env["SOUNDCHECK_LOG"] = os.environ.get("SOUNDCHECK_LOG", "info")
        p = subprocess.Popen(self.cmd(), stdout=f, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
        f.close()
        self.all_procs.append(p)
        self.logs.append(path)
        return p, path

    def start(self, timeout=30.0):
        """Starts an incarnation and waits until it answers an authenticated request."""
        self.incarnation += 1
        t0 = time.time()
        p, path = self.spawn(f"{self.incarnation:02d}")
        self.proc = p
        base = None
        while time.time() - t0 < timeout:
            if p.poll() is not None:
                raise RuntimeError(f"serve #{self.incarnation} exited with {p.returncode} at start: "
                                   + tail(path))
            text = read_text(path)
            if base is None:
                m = re.search(r"listening on (http://\S+)", text)
                keys = dict(re.findall(r"^(SOUNDCHECK_[A-Z_]+)=(\S+)$", text, re.M))
                if m and {"SOUNDCHECK_FT_KEY", "SOUNDCHECK_TL_KEY", "SOUNDCHECK_WEBHOOK_SECRET"} <= keys.keys():
                    base, self.keys = m.group(1), keys
            if base:
                try:
                    st, _, _ = request(base, "GET", "/v1/credits", self.tl_headers(), timeout=5)
                    if st == 200:
                        self.base = base
                        return time.time() - t0
                except (Down, Hang):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"serve #{self.incarnation} not ready within {timeout:.0f} s: " + tail(path))

    def tl_headers(self):
        return {"Authorization": f"Bearer {self.keys.get('SOUNDCHECK_TL_KEY', '')}"}

    def ft_headers(self):
        return {"X-API-Key": self.keys.get("SOUNDCHECK_FT_KEY", "")}

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout=30.0):
        """SIGTERM and wait; returns the seconds it took, or None if it had to be killed."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
            return time.time() - t0
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def kill_all(self):
        for p in self.all_procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(path, n=15):
    return "\n    ".join([""] + read_text(path).splitlines()[-n:])


# ---------------------------------------------------------------------------------------------
# The run


class Chaos:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.t_start = time.time()
        self.lock = threading.Lock()
        self.violations: dict[str, list[str]] = collections.OrderedDict()
        self.notes: dict[str, str] = collections.OrderedDict()
        self.jobs: dict[str, dict] = {}  # every job a 202 named
        self.gens: dict[str, dict] = {}  # every generation a 202 named
        self.submits: list[dict] = []
        self.phase = "normal"
        self.up = threading.Event()  # the server answers
        self.load_on = threading.Event()
        self.stop = threading.Event()
        self.inflight = 0
        self.expected_down = False  # set around kills and restarts
        self.kill_log: list[str] = []
        self.max_used_mb = 0.0
        self.crashed = False
        self.refused_keys: dict[str, tuple] = {}
        # Invariants whose check ran (the continuous ones always count as checked).
        self.checked = {"server_stays_up", "no_hang_or_5xx", "submits_accepted", "harness"}
        self.poll_on = threading.Event()
        self.poll_on.set()

    # -- bookkeeping -----------------------------------------------------------------------

    def violate(self, invariant, msg):
        with self.lock:
            vs = self.violations.setdefault(invariant, [])
            vs.append(msg)
            n = len(vs)
        if n <= 3:
            log(f"VIOLATION [{invariant}] {msg}")
        elif n == 4:
            log(f"VIOLATION [{invariant}] more of these: see the summary")

    def elapsed(self):
        return time.time() - self.t_start

    def check_time(self, what):
        if self.elapsed() > self.a.time_limit:
            raise TimeoutError(f"time limit of {self.a.time_limit} s passed during {what}")

    def backlog(self):
        with self.lock:
            return sum(1 for j in self.jobs.values() if j["status"] not in FINAL) + sum(
                1 for g in self.gens.values() if g["status"] not in FINAL
            )

    def usage_mb(self):
        try:
            st = os.statvfs(self.data_dir)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize / 2**20
            if self.phase == "normal":  # not the filler
                self.max_used_mb = max(self.max_used_mb, used)
            return used
        except OSError:
            return 0.0

    # -- setup -------------------------------------------------------------------------------

    def setup(self):
        a = self.a
        self.work = tempfile.mkdtemp(prefix="soundcheck-chaos-")
        self.log_dir = os.path.join(self.work, "logs")
        self.data_dir = os.path.join(self.work, "data")
        self.home = os.path.join(self.work, "home")
        os.makedirs(self.log_dir)
        os.makedirs(self.data_dir)
        self.mounted = False
        if not a.no_tmpfs:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={a.tmpfs_mb}m,mode=0700", "tmpfs", self.data_dir],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                raise SystemExit(
                    f"cannot mount a tmpfs on {self.data_dir} (needs root): {r.stderr.strip()}\n"
                    "run as root, or pass --no-tmpfs to skip the disk-full phase"
                )
            self.mounted = True
        self.receiver = Receiver(a.seed * 7919 + 1, a.webhook_fail)
        self.receiver.start()
        self.server = Server(a.bin, self.data_dir, self.log_dir, self.home, [])
        self.wavs = make_wavs(random.Random(a.seed * 31 + 7), 6)
        log(f"work dir {self.work}; data dir {self.data_dir} "
            f"({'tmpfs ' + str(a.tmpfs_mb) + ' MB' if self.mounted else 'no tmpfs'}); "
            f"receiver {self.receiver.url}")

    def cleanup(self, failed):
        self.stop.set()
        self.load_on.set()  # wake waiting threads so they see stop
        try:
            self.server.kill_all()
        except AttributeError:
            pass
        try:
            self.receiver.stop()
        except AttributeError:
            pass
        keep = failed or self.a.keep
        if keep and hasattr(self, "receiver") and hasattr(self, "log_dir"):
            with open(os.path.join(self.log_dir, "receiver.jsonl"), "w") as f:
                for r in self.receiver.snapshot():
                    f.write(json.dumps(r) + "\n")
            with open(os.path.join(self.log_dir, "submits.jsonl"), "w") as f:
                for r in self.submits:
                    f.write(json.dumps(r) + "\n")
        if keep and hasattr(self, "data_dir"):
            # Keep the database (not the audio) beside the logs for a post-mortem.
            for name in os.listdir(self.data_dir):
                if name.startswith("soundcheck.sqlite"):
                    try:
                        shutil.copy2(os.path.join(self.data_dir, name), self.log_dir)
                    except OSError:
                        pass
        if getattr(self, "mounted", False):
            r = subprocess.run(["umount", self.data_dir], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", self.data_dir], capture_output=True)
            self.mounted = False
        if hasattr(self, "work"):
            if keep:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                log(f"logs and database kept in {self.log_dir}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)

    # -- load ----------------------------------------------------------------------------------

    def submit_once(self, kind, rng):
        """One submit, with retries of the same Idempotency-Key while the server is down."""
        fault = None
        x = rng.random()
        if x < 0.12:
            fault = "internal_error"
        elif x < 0.17:
            fault = f"delay={rng.randrange(100, 800)}"
        if kind == "generation":
            body = {
                "tags": rng.choice(["lofi chill, piano", "techno, aggressive", "house, warm pads",
                                    "ambient, calm strings", "drum and bass"]),
                "duration": rng.randrange(1, 4),
                "seed": rng.randrange(0, 2**32),
                "webhook": f"{self.receiver.url}/generations?n={rng.randrange(10**6)}",
            }
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
            path, api = "/v1/generations", "ft"
            retries = 1  # no idempotency for generations: a lost 202 stays lost (checked in the DB)
        else:
            path, api = kind, "tl"
            fields = {}
            if kind == "/v1/separate":
                fields["stems"] = rng.choice(["2", "4"])
            elif kind == "/v1/master":
                fields["format"] = rng.choice(["wav16", "flac", "mp3"])
            elif kind == "/v1/transcribe":
                fields["midi_tempo"] = str(rng.choice([100, 120]))
            data, ctype = multipart(fields, "take.wav", rng.choice(self.wavs))
            headers = {"Content-Type": ctype, "Idempotency-Key": f"chaos-{self.a.seed}-{rng.getrandbits(64):016x}"}
            retries = 4
        if fault:
            headers["X-Soundcheck-Fault"] = fault
        for attempt in range(retries):
            if self.stop.is_set():
                return
            if not self.up.wait(timeout=40):
                return
            base = self.server.base
            # (the phase at send time and at answer time both count for the disk-full rules)
            phase0 = self.phase
            auth = self.server.tl_headers() if api == "tl" else self.server.ft_headers()
            t0 = time.time()
            try:
                st, hdrs, resp = request(base, "POST", path, {**headers, **auth}, data)
            except Down as e:
                self.record_submit(kind, phase0, "down", str(e), fault)
                time.sleep(0.3)
                continue
            except Hang as e:
                self.record_submit(kind, phase0, "hang", str(e), fault)
                self.violate("no_hang_or_5xx", f"{phase0}: {e} (server pid "
                             f"{self.server.proc.pid if self.server.proc else '?'})")
                return
            phase = "disk_full" if "disk_full" in (phase0, self.phase) or \
                "recovering" in (phase0, self.phase) else phase0
            self.record_submit(kind, phase, st, resp[:300].decode("utf-8", "replace"), fault,
                               latency=time.time() - t0)
            if st == 202:
                j = as_json(resp) or {}
                with self.lock:
                    if kind == "generation":
                        self.gens.setdefault(j.get("id"), {"status": j.get("status"), "fault": fault,
                                                            "phase": phase, "at": time.time()})
                    else:
                        jid = j.get("job_id")
                        if jid not in self.jobs:
                            self.jobs[jid] = {"endpoint": kind, "status": j.get("status"), "fault": fault,
                                              "reserved": (j.get("_meta") or {}).get("credits_reserved"),
                                              "phase": phase, "at": time.time(),
                                              "replayed": hdrs.get("idempotent-replayed") == "true",
                                              "last_poll": 0.0}
                return
            self.judge_refusal(kind, phase, st, resp)
            if kind != "generation":
                with self.lock:
                    self.refused_keys[headers["Idempotency-Key"]] = (kind, st, phase)
            return

    def record_submit(self, kind, phase, status, detail, fault, latency=None):
        with self.lock:
            self.submits.append({"kind": kind, "phase": phase, "status": status, "detail": detail,
                                 "fault": fault, "latency": latency, "t": round(self.elapsed(), 2)})

    def judge_refusal(self, kind, phase, st, resp):
        text = resp[:400].decode("utf-8", "replace")
        panic = "panick" in text.lower()
        if phase == "disk_full":
            if st in (503, 507) and envelope_ok(resp) and not panic:
                return
            self.violate("disk_full_submit_clean",
                         f"{kind} answered {st} while the disk was full (want 202, or 503/507 with the "
                         f"error envelope): {text}")
        else:
            inv = "no_hang_or_5xx" if st >= 500 else "submits_accepted"
            self.violate(inv, f"{kind} answered {st} during {phase} load: {text}")

    def load_thread(self, idx):
        rng = random.Random(self.a.seed * 1000 + idx)
        kinds = JOB_ENDPOINTS + ["generation"]
        while not self.stop.is_set():
            if not self.load_on.wait(timeout=0.2):
                continue
            if self.stop.is_set():
                return
            with self.lock:
                n = len(self.submits)
            throttle = self.phase != "disk_full" and self.backlog() >= self.a.max_backlog
            if n >= self.a.max_submits or throttle:
                time.sleep(0.1)
                continue
            kind = rng.choice(kinds)
            with self.lock:
                self.inflight += 1
            try:
                self.submit_once(kind, rng)
            except Exception as e:  # a bug here must not stop the load silently
                self.violate("harness", f"load thread {idx}: {e!r}\n{traceback.format_exc()}")
            finally:
                with self.lock:
                    self.inflight -= 1
            time.sleep(rng.uniform(0.2, 0.8))

    def poller_thread(self):
        """Polls every non-final job (at most once a second each: the API's limit) and generation."""
        while not self.stop.is_set():
            if not self.up.wait(timeout=0.5) or not self.poll_on.is_set():
                time.sleep(0.1)
                continue
            with self.lock:
                jobs = [(k, v) for k, v in self.jobs.items() if v["status"] not in FINAL]
                gens = [(k, v) for k, v in self.gens.items() if v["status"] not in FINAL]
            base = self.server.base
            for jid, j in jobs:
                if self.stop.is_set():
                    return
                if time.time() - j["last_poll"] < 1.1:
                    continue
                j["last_poll"] = time.time()
                try:
                    st, _, resp = request(base, "GET", f"/v1/jobs/{jid}", self.server.tl_headers(), timeout=10)
                except (Down, Hang):
                    break
                if st == 200:
                    body = as_json(resp) or {}
                    with self.lock:
                        j["status"] = body.get("status")
                        j["credits_used"] = body.get("credits_used")
                        j["error"] = body.get("error")
            for gid, g in gens:
                if self.stop.is_set():
                    return
                if time.time() - g.get("last_poll", 0.0) < 1.0:
                    continue
                g["last_poll"] = time.time()
                try:
                    st, _, resp = request(base, "GET", f"/v1/generations/{gid}", self.server.ft_headers(), timeout=10)
                except (Down, Hang):
                    break
                if st == 200:
                    with self.lock:
                        g["status"] = (as_json(resp) or {}).get("status")
            self.usage_mb()
            time.sleep(0.2)

    def watchdog(self):
        """Notes a server that dies when nobody killed it (a crash)."""
        while not self.stop.is_set():
            p = self.server.proc
            if p is not None and p.poll() is not None and not self.expected_down:
                self.up.clear()
                self.violate("server_stays_up",
                             f"serve #{self.server.incarnation} (pid {p.pid}) exited by itself with "
                             f"{p.returncode} during {self.phase}:{tail(self.server.logs[-1], 8)}")
                self.expected_down = True  # the main loop restarts it
                self.crashed = True
            time.sleep(0.1)

    def quiesce(self, timeout=40):
        """Stops new submits and waits for the ones in flight."""
        self.load_on.clear()
        t0 = time.time()
        while time.time() - t0 < timeout:
            with self.lock:
                if self.inflight == 0:
                    return
            time.sleep(0.05)

    def wait_final(self, timeout, what):
        """Waits (polled by the poller) until every accepted job and generation is final."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.backlog() == 0:
                return time.time() - t0
            self.check_time(what)
            time.sleep(0.25)
        return None

    def pending(self):
        with self.lock:
            return ([f"{k} {v['endpoint']} {v['status']}" for k, v in self.jobs.items() if v["status"] not in FINAL],
                    [f"{k} {v['status']}" for k, v in self.gens.items() if v["status"] not in FINAL])

    # -- server lifecycle ------------------------------------------------------------------------

    def restart(self, why):
        self.expected_down = True
        self.up.clear()
        try:
            took = self.server.start(timeout=30)
        except RuntimeError as e:
            self.violate("server_stays_up", f"{why}: {e}")
            raise
        self.crashed = False
        self.expected_down = False
        self.up.set()
        log(f"serve #{self.server.incarnation} up in {took:.2f} s at {self.server.base} ({why})")
        return took

    def ensure_up(self):
        if getattr(self, "crashed", False) or not self.server.alive():
            self.restart("after a crash")

    # -- the special episodes ---------------------------------------------------------------------

    def second_serve(self):
        log("second `serve` on the same data directory while the first runs")
        self.checked.add("second_serve_refused")
        p, path = self.server.spawn(f"second-{self.server.incarnation:02d}")
        t0 = time.time()
        try:
            rc = p.wait(timeout=self.a.second_serve_wait)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - t0
        out = read_text(path)
        if rc is None:
            m = re.search(r"listening on (\S+)", out)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            self.violate("second_serve_refused",
                         f"a second serve (pid {p.pid}) on {self.data_dir} was still running after "
                         f"{self.a.second_serve_wait:.0f} s"
                         + (f", listening on {m.group(1)}" if m else "")
                         + "; killed. Its output began:" + "\n    ".join([""] + out.splitlines()[:4]))
        elif rc == 0:
            self.violate("second_serve_refused", f"the second serve exited 0 after {took:.1f} s:{tail(path, 6)}")
        elif self.data_dir not in out:
            self.violate("second_serve_refused",
                         f"the second serve exited {rc} after {took:.1f} s but its message does not name "
                         f"the data directory {self.data_dir}:{tail(path, 6)}")
        else:
            line = next((l for l in out.splitlines() if self.data_dir in l), "")
            self.notes["second_serve"] = f"refused in {took:.2f} s, exit {rc}: {line.strip()[:300]}"
            log(f"second serve refused in {took:.2f} s (exit {rc})")
        # The first one must be unaffected.
        if not self.server.alive():
            self.violate("second_serve_refused", "the first server was not running after the second serve")
        else:
            try:
                st, _, _ = request(self.server.base, "GET", "/v1/credits", self.server.tl_headers(), timeout=10)
                if st != 200:
                    self.violate("second_serve_refused", f"the first server answered {st} after the second serve")
            except (Down, Hang) as e:
                self.violate("second_serve_refused", f"the first server did not answer after the second serve: {e}")

    def fill(self, fd):
        """Writes into the filler until the file system refuses; returns the bytes written."""
        n = 0
        for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
            buf = b"\0" * chunk
            while True:
                try:
                    w = os.write(fd, buf)
                    n += w
                    if w < chunk:
                        break
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        break
                    raise
        return n

    def flood(self, most=40):
        """Right after the fill, submits the largest input until one is refused: SQLite keeps
        committing into the space its write-ahead log already has, and this uses that up, so the
        work finishing in the full window meets a database that cannot commit."""
        accepted = 0
        for i in range(most):
            data, ctype = multipart({}, "flood.wav", self.wavs[0])
            try:
                st, _, resp = request(self.server.base, "POST", "/v1/analyze/upload",
                                      {"Content-Type": ctype, **self.server.tl_headers()}, data)
            except (Down, Hang) as e:
                self.violate("no_hang_or_5xx", f"flood submit while the disk was full: {e}")
                return f"flood stopped: {e}"
            self.record_submit("/v1/analyze/upload", "disk_full", st, resp[:300].decode("utf-8", "replace"), None)
            if st != 202:
                self.judge_refusal("/v1/analyze/upload", "disk_full", st, resp)
                return f"flood: {accepted} accepted before the first refusal ({st})"
            accepted += 1
            jid = (as_json(resp) or {}).get("job_id")
            with self.lock:
                self.jobs[jid] = {"endpoint": "/v1/analyze/upload", "status": "queued", "fault": None,
                                  "reserved": 2, "phase": "disk_full", "at": time.time(),
                                  "replayed": False, "last_poll": 0.0}
        return f"flood: all {most} accepted, none refused"

    def disk_full(self):
        log("disk full: filling the data directory's tmpfs")
        self.checked.update({"disk_full_submit_clean", "disk_full_recovery"})
        # Best effort: start while a job runs.
        t0 = time.time()
        while time.time() - t0 < 6:
            with self.lock:
                if any(j["status"] == "running" for j in self.jobs.values()):
                    break
            time.sleep(0.1)
        # Work that is sure to run (and finish) while the disk is full: submits whose run starts
        # 2-6 s after a worker takes them, so that they finish well into the full window (the
        # first commits after the fill may still fit in the database's write-ahead log).
        burst = []
        brng = random.Random(self.a.seed * 17 + 3)
        hold_ms = int(self.a.disk_full_seconds * 1000)
        for i in range(8):
            delay = f"delay={brng.randrange(hold_ms // 4, max(hold_ms * 3 // 4, hold_ms // 4 + 1))}"
            try:
                if i < 6:
                    ep = JOB_ENDPOINTS[i % 4]
                    data, ctype = multipart({}, "burst.wav", self.wavs[1 + i % 5])
                    st, _, resp = request(self.server.base, "POST", ep, {"Content-Type": ctype,
                                          "X-Soundcheck-Fault": delay, **self.server.tl_headers()}, data)
                    if st == 202:
                        jid = (as_json(resp) or {}).get("job_id")
                        burst.append(jid)
                        with self.lock:
                            self.jobs[jid] = {"endpoint": ep, "status": "queued", "fault": delay,
                                              "reserved": PRICES[ep], "phase": "before fill", "at": time.time(),
                                              "replayed": False, "last_poll": 0.0}
                else:
                    body = json.dumps({"tags": "techno", "duration": 2, "seed": i,
                                       "webhook": f"{self.receiver.url}/generations?burst={i}"}).encode()
                    st, _, resp = request(self.server.base, "POST", "/v1/generations",
                                          {"Content-Type": "application/json", "X-Soundcheck-Fault": delay,
                                           **self.server.ft_headers()}, body)
                    if st == 202:
                        gid = (as_json(resp) or {}).get("id")
                        burst.append(gid)
                        with self.lock:
                            self.gens[gid] = {"status": "queued", "fault": delay, "phase": "before fill",
                                              "at": time.time()}
                if st != 202:
                    self.violate("submits_accepted", f"burst submit before the fill answered {st}: {resp[:200]!r}")
            except (Down, Hang) as e:
                self.violate("no_hang_or_5xx", f"burst submit before the fill: {e}")
        log(f"burst of {len(burst)} delayed submits before the fill: {' '.join(burst)}")
        filler = os.path.join(self.data_dir, "chaos-filler.bin")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.phase = "disk_full"
        try:
            written = self.fill(fd)
            probe_failed = False
            try:
                pfd = os.open(os.path.join(self.data_dir, "chaos-probe"), os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.write(pfd, b"x" * 8192)
                finally:
                    os.close(pfd)
            except OSError as e:
                probe_failed = e.errno in (errno.ENOSPC, errno.EDQUOT)
            if not probe_failed:
                self.violate("harness", "the tmpfs accepted an 8 KiB write after filling: the disk-full phase did not bite")
            flood = self.flood()
            log(f"filled: {written / 2**20:.1f} MB filler, writes fail: {probe_failed}; {flood}; submits "
                f"continue for {self.a.disk_full_seconds:.0f} s")
            hold_end = time.time() + self.a.disk_full_seconds
            while time.time() < hold_end:
                self.fill(fd)  # keep it full whatever the server frees
                time.sleep(0.3)
        finally:
            os.close(fd)
            for f in (filler, os.path.join(self.data_dir, "chaos-probe")):
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass
        t_free = time.time()
        self.phase = "recovering"
        log(f"space freed ({self.usage_mb():.1f} MB used); waiting up to {self.a.recovery_seconds:.0f} s "
            "for every accepted job and generation to be final, without a restart")
        self.quiesce()
        alive_at_free = self.server.alive()
        # A submit after space is back must be accepted and finish like the others.
        fresh = None
        try:
            data, ctype = multipart({}, "after-free.wav", self.wavs[1])
            st, _, resp = request(self.server.base, "POST", "/v1/analyze/upload",
                                  {"Content-Type": ctype, **self.server.tl_headers()}, data)
            if st == 202:
                fresh = (as_json(resp) or {}).get("job_id")
                with self.lock:
                    self.jobs[fresh] = {"endpoint": "/v1/analyze/upload", "status": "queued", "fault": None,
                                        "reserved": 2, "phase": "recovering", "at": time.time(),
                                        "replayed": False, "last_poll": 0.0}
            else:
                self.violate("disk_full_recovery", f"a submit {time.time() - t_free:.1f} s after space was "
                             f"freed answered {st}: {resp[:200]!r}")
        except (Down, Hang) as e:
            self.violate("disk_full_recovery", f"a submit after space was freed failed: {e}")
        remaining = self.a.recovery_seconds - (time.time() - t_free)
        took = self.wait_final(max(remaining, 0), "disk-full recovery")
        restarted = not alive_at_free or getattr(self, "crashed", False) or not self.server.alive()
        if took is None:
            jobs, gens = self.pending()
            self.violate("disk_full_recovery",
                         f"{len(jobs)} jobs and {len(gens)} generations not final "
                         f"{self.a.recovery_seconds:.0f} s after space was freed (no restart): "
                         + "; ".join(jobs[:12] + gens[:6]) + (" …" if len(jobs) > 12 or len(gens) > 6 else ""))
        elif restarted:
            self.violate("disk_full_recovery", "the server did not survive the full disk (it exited)")
        else:
            self.notes["disk_full_recovery"] = (f"all final {time.time() - t_free:.1f} s after space was freed"
                                                + (f" (incl. fresh job {fresh})" if fresh else ""))
            log(self.notes["disk_full_recovery"])
        self.phase = "normal"

    # -- main sequence ----------------------------------------------------------------------------

    def run(self):
        a = self.a
        self.setup()
        self.restart("first start")
        self.receiver.secret = self.server.keys["SOUNDCHECK_WEBHOOK_SECRET"]
        tl = self.server.tl_headers()
        st, _, resp = request(self.server.base, "PUT", "/v1/webhook",
                              {"Content-Type": "application/json", **tl},
                              json.dumps({"url": f"{self.receiver.url}/jobs", "enabled": True}).encode())
        if st != 200:
            raise RuntimeError(f"PUT /v1/webhook answered {st}: {resp!r}")
        st, _, resp = request(self.server.base, "POST", "/v1/credits",
                              {"Content-Type": "application/json", **tl}, json.dumps({"amount": TOP_UP}).encode())
        if st != 200:
            raise RuntimeError(f"POST /v1/credits answered {st}: {resp!r}")
        self.start_credits = STARTING_CREDITS + TOP_UP
        st, _, resp = request(self.server.base, "GET", "/v1/credits", tl)
        bal = (as_json(resp) or {}).get("balance")
        if bal != self.start_credits:
            self.violate("ledger_balances", f"balance after the top-up is {bal}, want {self.start_credits}")

        threads = [threading.Thread(target=self.load_thread, args=(i,), daemon=True) for i in range(a.clients)]
        threads += [threading.Thread(target=self.poller_thread, daemon=True),
                    threading.Thread(target=self.watchdog, daemon=True)]
        for t in threads:
            t.start()
        self.load_on.set()

        second_at = self.rng.randrange(1, a.kills + 1) if a.kills else 0
        disk_at = self.rng.randrange(1, a.kills + 1) if a.kills else 0
        log(f"seed {a.seed}: {a.kills} kills; second serve before kill {second_at}; "
            f"disk full before kill {disk_at}{' (skipped: no tmpfs)' if not self.mounted else ''}")
        for k in range(1, a.kills + 1):
            dwell = self.rng.uniform(a.min_dwell, a.max_dwell)
            end = time.time() + dwell
            while time.time() < end:
                self.ensure_up()
                time.sleep(0.05)
            self.check_time(f"kill {k}")
            if k == second_at:
                self.second_serve()
            if k == disk_at and self.mounted:
                self.disk_full()
                self.load_on.set()
                time.sleep(self.rng.uniform(0.5, 2.0))
            self.ensure_up()
            self.expected_down = True
            self.up.clear()
            with self.lock:
                running = sum(1 for j in self.jobs.values() if j["status"] == "running")
                n_jobs, n_gens = len(self.jobs), len(self.gens)
            pid = self.server.proc.pid
            self.server.kill9()
            self.kill_log.append(f"kill {k}: pid {pid} at +{self.elapsed():.1f} s "
                                 f"({n_jobs} jobs, {n_gens} generations accepted; {running} seen running)")
            log(f"kill -9 #{k} pid {pid} ({running} jobs seen running)")
            time.sleep(self.rng.uniform(0.1, 1.0))
            self.restart(f"after kill {k}")
            self.usage_mb()

        # Load for a little longer, then stop it and restart cleanly.
        time.sleep(self.rng.uniform(1.0, 3.0))
        self.ensure_up()
        self.quiesce()
        self.expected_down = True
        self.up.clear()
        took = self.server.terminate(timeout=30)
        if took is None:
            self.violate("server_stays_up", "SIGTERM did not stop the server within 30 s (killed)")
        elif self.server.proc.returncode != 0:
            self.violate("server_stays_up", f"SIGTERM: the server exited with {self.server.proc.returncode}")
        self.restart("final clean restart")
        took = self.wait_final(a.final_timeout, "final drain")
        if took is None:
            log(f"not everything final after {a.final_timeout:.0f} s")
        else:
            log(f"all accepted work final {took:.1f} s after the clean restart")
        self.check_invariants()

    # -- invariants ---------------------------------------------------------------------------------

    def check_invariants(self):
        a, srv = self.a, self.server
        base, tl, ft = srv.base, srv.tl_headers(), srv.ft_headers()
        self.poll_on.clear()
        time.sleep(1.5)  # the poll limit: one GET per job per second
        # 1. Every accepted job and generation is final (asked of the server, not our cache).
        self.checked.update({"all_final", "webhook_attempted", "webhook_signatures"})
        final_jobs, final_gens = {}, {}
        for jid, j in sorted(self.jobs.items()):
            for _ in range(5):
                st, _, resp = request(base, "GET", f"/v1/jobs/{jid}", tl)
                if st != 429:
                    break
                time.sleep(1.1)
            body = as_json(resp) or {}
            if st == 404:
                self.violate("all_final", f"accepted job {jid} ({j['endpoint']}) is unknown to the server (404)")
            elif st != 200:
                self.violate("all_final", f"GET /v1/jobs/{jid} answered {st}")
            elif body.get("status") not in FINAL:
                self.violate("all_final", f"job {jid} ({j['endpoint']}, accepted during {j['phase']}) is "
                             f"{body.get('status')!r} after the final restart and {a.final_timeout:.0f} s")
            else:
                final_jobs[jid] = body
        for gid, g in sorted(self.gens.items()):
            st, _, resp = request(base, "GET", f"/v1/generations/{gid}", ft)
            body = as_json(resp) or {}
            if st != 200:
                self.violate("all_final", f"accepted generation {gid} answered {st}")
            elif body.get("status") not in FINAL:
                self.violate("all_final", f"generation {gid} is {body.get('status')!r} after the final restart")
            else:
                final_gens[gid] = body

        # 2. Each final one got at least one webhook attempt: the server's delivery log (bounded
        # wait: the first attempt is immediate) and the receiver's own log.
        missing = {}
        deadline = time.time() + a.webhook_wait
        todo = list(final_jobs) + list(final_gens)
        while todo and time.time() < deadline:
            left = []
            for sid in todo:
                st, _, resp = request(base, "GET", f"/v1/webhook/deliveries?of={sid}&limit=100", tl)
                attempts = (as_json(resp) or {}).get("data") if st == 200 else None
                if not attempts:
                    left.append(sid)
                    missing[sid] = f"GET /v1/webhook/deliveries?of={sid} answered {st} with {len(attempts or [])} attempts"
            todo = left
            if todo:
                time.sleep(1.0)
        for sid in todo:
            self.violate("webhook_attempted", f"{sid}: no delivery attempt in the server's log ({missing[sid]})")
        got = self.receiver.snapshot()
        seen = collections.defaultdict(list)
        for r in got:
            seen[r["subject"]].append(r)
        for sid in list(final_jobs) + list(final_gens):
            if not seen.get(sid):
                self.violate("webhook_attempted", f"{sid}: the receiver never got a request for it")
        bad_sig = [r for r in got if r["signed"] and r["verified"] is False]
        if bad_sig:
            self.violate("webhook_signatures", f"{len(bad_sig)} job webhooks failed signature verification, e.g. "
                         f"{bad_sig[0]['subject']} {bad_sig[0]['event_id']}")
        # A job run twice sends two job.* events with different ids (issue 14).
        for sid, rs in seen.items():
            ids = {r["event_id"] for r in rs if r["event_id"]}
            if len(ids) > 1:
                self.violate("no_double_charge", f"{sid}: the receiver got {len(ids)} different event ids: {sorted(ids)}")

        # 3. The ledger balances, through the API.
        st, _, resp = request(base, "GET", "/v1/credits", tl)
        api_balance = (as_json(resp) or {}).get("balance")

        # Stop cleanly, then read the database itself.
        self.stop.set()
        self.expected_down = True
        self.up.clear()
        took = srv.terminate(timeout=30)
        if took is None:
            self.violate("server_stays_up", "the final SIGTERM did not stop the server within 30 s")
        cli = subprocess.run([a.bin, "credits", "show", "--data-dir", self.data_dir],
                             capture_output=True, text=True, timeout=60,
                             env=isolated_env(self.home))
        cli_balance = None
        if cli.returncode == 0 and cli.stdout.strip().lstrip("-").isdigit():
            cli_balance = int(cli.stdout.strip())
        else:
            self.notes["credits_cli"] = f"`soundcheck credits show` failed ({cli.returncode}): {cli.stderr.strip()[:200]}"
        self.check_database(api_balance, cli_balance)
        self.scan_logs()

    def check_database(self, api_balance, cli_balance):
        db = os.path.join(self.data_dir, "soundcheck.sqlite")
        self.checked.update({"ledger_balances", "no_double_charge", "integrity_check"})
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            ic = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if ic != ["ok"]:
                self.violate("integrity_check", f"PRAGMA integrity_check: {ic[:10]}")
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
            if fk:
                self.violate("integrity_check", f"PRAGMA foreign_key_check: {fk[:10]}")
            jobs = {r[0]: {"endpoint": r[1], "status": r[2], "reserved": r[3], "used": r[4]}
                    for r in conn.execute("SELECT id, endpoint, status, credits_reserved, credits_used FROM jobs")}
            gens = dict(conn.execute("SELECT id, status FROM generations").fetchall())
            ledger = conn.execute("SELECT id, job_id, kind, delta, balance_after FROM credit_ledger ORDER BY id").fetchall()
            events = conn.execute("SELECT id, kind, type, subject_id, state FROM webhook_events").fetchall()
            idem = dict(conn.execute("SELECT key, job_id FROM idempotency_keys").fetchall())
            attempts = collections.Counter(
                r[0] for r in conn.execute(
                    "SELECT e.subject_id FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id"))
        finally:
            conn.close()
        self.db_counts = {"jobs": len(jobs), "generations": len(gens), "ledger rows": len(ledger),
                          "webhook events": len(events), "attempts": sum(attempts.values())}

        # Everything the database holds is final too, including submits whose 202 was lost to a kill.
        orphans = [j for j in jobs if j not in self.jobs]
        self.notes["orphans"] = (f"{len(orphans)} jobs and {len([g for g in gens if g not in self.gens])} "
                                 "generations in the database whose 202 never arrived (killed mid-answer)")
        for jid, j in jobs.items():
            if j["status"] not in FINAL and jid not in self.jobs:
                self.violate("all_final", f"job {jid} ({j['endpoint']}, 202 lost) is {j['status']!r} in the database")
        for gid, s in gens.items():
            if s not in FINAL and gid not in self.gens:
                self.violate("all_final", f"generation {gid} (202 lost) is {s!r} in the database")
        for jid in self.jobs:
            if jid not in jobs:
                self.violate("all_final", f"accepted job {jid} is not in the database")
        # A refused submit stores nothing: its Idempotency-Key names no job.
        for key, (kind, st, phase) in self.refused_keys.items():
            if key in idem:
                inv = "disk_full_submit_clean" if phase == "disk_full" else "submits_accepted"
                self.violate(inv, f"{kind} answered {st} during {phase}, yet its Idempotency-Key {key} "
                             f"stored job {idem[key]} ({jobs.get(idem[key], {}).get('status')})")
        for sid in [j for j, v in jobs.items() if v["status"] in FINAL] + [g for g, s in gens.items() if s in FINAL]:
            if attempts[sid] == 0:
                self.violate("webhook_attempted", f"{sid}: final, but webhook_attempts has no row for it")

        # The ledger: a consistent chain, grants as made, one reservation and at most one
        # settlement per job, and start − Σ charged = balance.
        prev = 0
        for (rid, job_id, kind, delta, after) in ledger:
            if prev + delta != after:
                self.violate("ledger_balances", f"ledger row {rid} ({kind} {delta:+} for {job_id}): "
                             f"balance_after {after}, want {prev + delta}")
            prev = after
        grants = sum(d for (_, j, k, d, _) in ledger if k == "grant")
        if grants != self.start_credits:
            self.violate("ledger_balances", f"grants total {grants}, want {self.start_credits} "
                         f"({STARTING_CREDITS} starting + {TOP_UP} top-up)")
        per_job = collections.defaultdict(list)
        for (rid, job_id, kind, delta, after) in ledger:
            if job_id:
                per_job[job_id].append((kind, delta))
        charged = 0
        for jid, j in jobs.items():
            rows = per_job.get(jid, [])
            reserves = [d for k, d in rows if k == "reserve"]
            settles = [(k, d) for k, d in rows if k in ("charge", "refund")]
            if len(reserves) != 1 or reserves[0] != -j["reserved"]:
                self.violate("no_double_charge", f"job {jid}: reserve rows {reserves}, want one of {-j['reserved']}")
            want = 1 if j["status"] in FINAL else 0
            if len(settles) != want:
                self.violate("no_double_charge", f"job {jid} ({j['status']}): {len(settles)} charge/refund rows "
                             f"{settles}, want {want}")
            for k, d in settles:
                if k == "charge" and (d != 0 or j["used"] != j["reserved"]):
                    self.violate("ledger_balances", f"job {jid}: charge {d:+} with credits_used {j['used']} "
                                 f"of {j['reserved']} reserved")
                if k == "refund" and (d != j["reserved"] or j["used"] != 0):
                    self.violate("ledger_balances", f"job {jid}: refund {d:+} with credits_used {j['used']} "
                                 f"of {j['reserved']} reserved")
            charged += j["used"] if j["status"] in FINAL else j["reserved"]
        for jid in per_job:
            if jid not in jobs:
                self.violate("ledger_balances", f"ledger rows for a job not in the jobs table: {jid}")
        expected = self.start_credits - charged
        ledger_balance = ledger[-1][4] if ledger else None
        self.balance_line = (f"start {self.start_credits} − charged {charged} = {expected}; ledger {ledger_balance}, "
                             f"API {api_balance}, `credits show` {cli_balance}")
        for name, v in (("the ledger's last balance_after", ledger_balance), ("GET /v1/credits", api_balance),
                        ("`soundcheck credits show`", cli_balance)):
            if v is not None and v != expected:
                self.violate("ledger_balances", f"{name} says {v}; start {self.start_credits} − Σ charged "
                             f"{charged} = {expected}")
        if api_balance is None:
            self.violate("ledger_balances", "GET /v1/credits gave no balance")

        # One webhook event per final item: a second one means the item ran twice.
        per_subject = collections.defaultdict(list)
        for (eid, kind, typ, subject, state) in events:
            per_subject[subject].append((eid, typ))
        for sid, evs in per_subject.items():
            if len(evs) > 1:
                self.violate("no_double_charge", f"{sid}: {len(evs)} webhook events {evs} (it ran twice)")
        for jid, j in jobs.items():
            if j["status"] in FINAL and not per_subject.get(jid):
                self.violate("webhook_attempted", f"job {jid}: final but no webhook event in the outbox")

    def scan_logs(self):
        self.checked.add("no_panic")
        for path in self.server.logs:
            text = read_text(path)
            for line in text.splitlines():
                if "panicked at" in line:
                    self.violate("no_panic", f"{os.path.basename(path)}: {line.strip()[:300]}")

    # -- report ---------------------------------------------------------------------------------------

    def summary(self, error=None):
        if "no_panic" not in self.checked and hasattr(self, "server"):
            self.scan_logs()  # an aborted run's logs are still worth reading
        inv = [
            ("second_serve_refused", "a second serve on the data dir exits non-zero quickly, naming it"),
            ("disk_full_submit_clean", "submits while the disk is full: 202, or 503/507 with the envelope"),
            ("disk_full_recovery", "within the recovery window after freeing space, no restart: all final"),
            ("server_stays_up", "the server never exits unless killed; restarts come up"),
            ("no_hang_or_5xx", "no request hangs; no 5xx outside the disk-full window"),
            ("submits_accepted", "outside the disk-full window valid submits get 202"),
            ("all_final", "every accepted job and generation (and every one in the DB) is final"),
            ("webhook_attempted", "each final job/generation has >= 1 delivery attempt (API, DB, receiver)"),
            ("webhook_signatures", "job webhooks verify with the webhook secret"),
            ("ledger_balances", "start credits − Σ charged = balance (ledger, API, CLI); ledger chain consistent"),
            ("no_double_charge", "per job one reserve, one charge/refund, one webhook event"),
            ("integrity_check", "PRAGMA integrity_check = ok, foreign_key_check empty"),
            ("no_panic", "no 'panicked at' in any server log"),
            ("harness", "the harness itself worked"),
        ]
        by = collections.Counter((s["kind"], str(s["status"])) for s in self.submits)
        kinds = sorted({k for k, _ in by})
        print("\n" + "=" * 78)
        print(f"soundcheck chaos: seed {self.a.seed}, {self.a.kills} kills, {self.elapsed():.0f} s, binary {self.a.bin}")
        print(f"submits: {len(self.submits)} ->", ", ".join(
            f"{k.replace('/v1/', '')} " + "/".join(f"{st}:{n}" for (kk, st), n in sorted(by.items()) if kk == k)
            for k in kinds))
        dfs = collections.Counter(str(s["status"]) for s in self.submits if s["phase"] == "disk_full")
        if dfs:
            print("submits while the disk was full:", ", ".join(f"{k}:{v}" for k, v in sorted(dfs.items())))
        fin = collections.Counter(j["status"] for j in self.jobs.values())
        print(f"accepted: {len(self.jobs)} jobs ({dict(fin)}), {len(self.gens)} generations; "
              f"restarts: {self.server.incarnation - 1}")
        rec = self.receiver.snapshot() if hasattr(self, "receiver") else []
        print(f"receiver: {len(rec)} deliveries ({sum(r['status'] == 500 for r in rec)} answered 500)")
        if hasattr(self, "db_counts"):
            print(f"database: {self.db_counts}")
        if hasattr(self, "balance_line"):
            print(f"credits: {self.balance_line}")
        if getattr(self, "mounted", False) or self.max_used_mb:
            print(f"data dir peak use: {self.max_used_mb:.1f} MB of {self.a.tmpfs_mb} MB tmpfs")
        for k, v in self.notes.items():
            print(f"note {k}: {v}")
        for line in self.kill_log:
            print(f"  {line}")
        print("-" * 78)
        failed = bool(self.violations) or error is not None
        for name, what in inv:
            vs = self.violations.get(name, [])
            if name == "harness" and not vs:
                continue
            mark = "FAIL" if vs else ("ok" if name in self.checked else "--")
            print(f"{mark:4} {name:24} {what}")
            for v in vs[:8]:
                print(f"       - {v}")
            if len(vs) > 8:
                print(f"       … and {len(vs) - 8} more")
        if error is not None:
            print(f"FAIL run aborted: {error}")
        if any(name not in self.checked for name, _ in inv):
            print("(--: not checked: the run was aborted, or --no-tmpfs / --kills 0 skipped that episode)")
        print("=" * 78)
        print("RESULT:", "FAIL" if failed else "PASS")
        return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="the soundcheck binary (target/debug/soundcheck)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--clients", type=int, default=3, help="concurrent submitting clients")
    p.add_argument("--max-submits", type=int, default=600, help="bound on the number of submits")
    p.add_argument("--max-backlog", type=int, default=10, help="accepted, not-yet-final items before clients wait")
    p.add_argument("--min-dwell", type=float, default=1.5, help="least seconds of load before a kill")
    p.add_argument("--max-dwell", type=float, default=5.0, help="most seconds of load before a kill")
    p.add_argument("--tmpfs-mb", type=int, default=160, help="size of the data directory's tmpfs")
    p.add_argument("--no-tmpfs", action="store_true", help="no tmpfs (not root): the disk-full phase is skipped")
    p.add_argument("--disk-full-seconds", type=float, default=8.0, help="how long the disk stays full")
    p.add_argument("--recovery-seconds", type=float, default=60.0, help="after freeing space, all must be final within")
    p.add_argument("--second-serve-wait", type=float, default=5.0, help="a second serve must exit within")
    p.add_argument("--final-timeout", type=float, default=120.0, help="drain after the final clean restart")
    p.add_argument("--webhook-wait", type=float, default=30.0, help="wait for first delivery attempts at the end")
    p.add_argument("--webhook-fail", type=float, default=1 / 3, help="fraction of deliveries answered 500")
    p.add_argument("--time-limit", type=float, default=360.0, help="abort (and fail) after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep logs and the database even when it passes")
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin} is not an executable: build first (cargo build)")

    chaos = Chaos(a)

    def on_signal(signum, _frame):
        # Once: `timeout` and CI runners signal the whole process group, and cleanup must finish.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    error = None
    try:
        chaos.run()
    except (Exception, KeyboardInterrupt) as e:  # report, clean up, fail
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        rc = 1
        try:
            rc = chaos.summary(error)
        finally:
            chaos.cleanup(failed=rc != 0)
    sys.exit(rc)


if __name__ == "__main__":
    main()
