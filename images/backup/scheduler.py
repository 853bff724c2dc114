"""berth's backup scheduler: runs each job of /berth/schedule.json at its cron times (UTC), forever.

No cron daemon: one loop sleeps until the next fire time of any job (croniter computes it), runs the
due jobs one after another (their scripts take the run lock, so nothing overlaps), and computes the
next time from the end of the run, so a run that overlaps its next slot skips it instead of piling up.
"""

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

from croniter import croniter

SCHEDULE = "/berth/schedule.json"
STARTED = "/backups/state/started"


def next_fire(cron, after):
    return croniter(cron, after).get_next(datetime)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(SCHEDULE) as handle:
        jobs = json.load(handle)["jobs"]
    subprocess.run(["mkdir", "-p", "/backups/state"], check=True)
    with open(STARTED, "w") as handle:
        handle.write(f"{int(time.time())}\n")
    now = datetime.now(timezone.utc)
    due = {job["name"]: next_fire(job["cron"], now) for job in jobs}
    for job in jobs:
        print(f"berth-backup: scheduler: {job['name']} at '{job['cron']}' UTC, next {due[job['name']]:%Y-%m-%dT%H:%M}Z",
              flush=True)
    while True:
        name = min(due, key=due.get)
        wait = (due[name] - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            time.sleep(min(wait, 60))
            continue
        job = next(job for job in jobs if job["name"] == name)
        subprocess.run(job["command"])  # the script prints its own summary line, success or not
        due[name] = next_fire(job["cron"], datetime.now(timezone.utc))


if __name__ == "__main__":
    main()
