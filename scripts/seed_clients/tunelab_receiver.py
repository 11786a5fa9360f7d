# The jobs API seed's Flask webhook receiver (003_fb65ce302cba68b3.txt, "Webhook signing" and
# "Idempotency"), unchanged but for where the secret comes from and what `handle` records.
# Run: TUNELAB_WEBHOOK_SECRET=whsec_... SEEN_FILE=seen.txt flask --app tunelab_receiver run --port N
import hmac, hashlib, os, time
from flask import Flask, request, abort

app = Flask(__name__)
SECRET = os.environ["TUNELAB_WEBHOOK_SECRET"].encode()
TOLERANCE = 300  # 5 minutes

@app.post("/webhooks/tunelab")
def receive():
    header = request.headers.get("X-TuneLab-Signature", "")
    parts = dict(p.split("=", 1) for p in header.split(","))
    ts, sig = parts.get("t"), parts.get("v1")
    if not ts or not sig:
        abort(401)

    # 1. Replay protection — reject anything older than 5 minutes
    if abs(time.time() - int(ts)) > TOLERANCE:
        abort(401, "stale signature")

    # 2. Constant-time comparison of HMAC
    payload = f"{ts}.{request.get_data(as_text=True)}"
    expected = hmac.new(SECRET, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig):
        abort(401, "bad signature")

    event = request.get_json()
    handle(event)
    return "", 200

# Simple in-memory dedupe; use Redis / DB in production
seen = set()

def handle(event):
    job_id = event["data"]["job_id"]
    if job_id in seen:
        return  # already processed, ack and move on
    seen.add(job_id)
    # ... do the work (here: record what arrived, for the test to read)
    with open(os.environ["SEEN_FILE"], "a") as f:
        f.write(f"{event['type']} {job_id}\n")
