# The jobs API seed's polling loop (003_fb65ce302cba68b3.txt, "Polling pattern"), unchanged but for
# where the base URL and key come from. Run in a directory holding track.wav:
#   TUNELAB_API=http://127.0.0.1:8080 TUNELAB_KEY=tl_test_... python3 poll_separate.py
import os
import time, requests
API = os.environ["TUNELAB_API"]
HEADERS = {"Authorization": f"Bearer {os.environ['TUNELAB_KEY']}"}
# 1. Submit the job
with open("track.wav", "rb") as f:
    r = requests.post(
        f"{API}/v1/separate",
        headers=HEADERS,
        files={"audio": f},
        data={"stems": "4"},
    )
r.raise_for_status()
job = r.json()
job_id = job["job_id"]
print(f"queued: {job_id}")
# 2. Poll with exponential backoff (2s, 3s, 4s ... max 15s)
delay = 2
while True:
    r = requests.get(f"{API}/v1/jobs/{job_id}", headers=HEADERS)
    r.raise_for_status()
    status = r.json()
    if status["status"] == "completed":
        for stem, url in status["result"]["stems"].items():
            print(f"{stem}: {url}")
        break
    if status["status"] == "failed":
        raise RuntimeError(status["error"])
    time.sleep(delay)
    delay = min(delay + 1, 15)
