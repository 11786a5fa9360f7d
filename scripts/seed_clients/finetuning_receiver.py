# The generations API seed's Flask webhook receiver (000_82bd86599d36bebc.txt), unchanged but for
# appending what it prints to SEEN_FILE so the test can read it.
# Run: FINETUNING_WEBHOOK_TOKEN=... SEEN_FILE=seen.txt flask --app finetuning_receiver run --port N
import os
from flask import Flask, request

app = Flask(__name__)
SECRET = os.environ["FINETUNING_WEBHOOK_TOKEN"]

def log(line):
    print(line)
    with open(os.environ["SEEN_FILE"], "a") as f:
        f.write(line + "\n")

@app.post("/finetuning-callback")
def finetuning_callback():
    if request.args.get("token") != SECRET:
        return "", 401
    payload = request.get_json()
    if payload["status"] == "completed":
        log(f"Generation {payload['id']} ready at {payload['audioUrl']}")
    else:
        log(f"Generation {payload['id']} failed: {payload.get('errorMessage')}")
    return "", 200
