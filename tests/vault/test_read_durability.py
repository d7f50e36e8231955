"""No read returns a value whose audit entry is not committed: a process reading from many
threads at once (so its reads share group commits) is killed with SIGKILL at random
moments, and every read it had answered before it died has its entry in the site's log; on
SQLite and on PostgreSQL. And concurrent reads through the SDK share commits."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from domicile.vault import Domicile

from .conftest import IVAN, Deployment

RU = {"citizenship": "RU"}

# The reader: THREADS threads read the tokens over and over, each read with a purpose of its
# own ("t<thread>.<n>"), and print that purpose once the read has returned its value.
READER = """
import sys, threading
from domicile.vault import Domicile

config, threads = sys.argv[1], int(sys.argv[2])
tokens = sys.stdin.read().split()
vault = Domicile.open(config)
out = threading.Lock()

def read(t):
    n = 0
    while True:
        purpose = f"t{t}.{n}"
        vault.get(tokens[n % len(tokens)], purpose=purpose, as_site="ru")
        with out:
            sys.stdout.write(purpose + "\\n")
            sys.stdout.flush()
        n += 1

print("ready", flush=True)
for t in range(threads):
    threading.Thread(target=read, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def read_purposes(deployment: Deployment) -> set[str]:
    vault = deployment.open()
    try:
        return {
            json.loads(r.payload)["purpose"]
            for r in vault.store("ru").audit()
            if '"action":"read"' in r.payload
        }
    finally:
        vault.close(checkpoint=False)


def test_every_answered_read_survives_a_sigkill(deployment: Deployment) -> None:
    vault = deployment.open()
    tokens = [
        vault.put(
            "profiles", subject=RU, fields={**IVAN, "email": f"r{i}@example.ru"}, purpose="x"
        ).token
        for i in range(5)
    ]
    vault.close()
    config = deployment.folder / "domicile.yaml"
    config.write_text(deployment.config_text)
    rng = random.Random(3)
    answered_total = 0
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(config), "6"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(" ".join(tokens))
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "ready"
        answered: list[str] = []
        reader = threading.Thread(target=answered.extend, args=(proc.stdout,))
        reader.start()
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        reader.join(30)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
        done = {line.strip() for line in answered if line.strip()}
        assert done, "the reader answered nothing before it was killed"
        missing = done - read_purposes(deployment)
        assert not missing, f"reads answered without a committed entry: {sorted(missing)[:5]}"
        answered_total += len(done)
    assert answered_total >= 30


def test_concurrent_reads_share_commits_and_all_are_logged(deployment: Deployment) -> None:
    vault: Domicile = deployment.open()
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="x").token
    errors: list[BaseException] = []

    def read(t: int) -> None:
        try:
            for n in range(40):
                assert vault.get(token, purpose=f"c{t}.{n}", as_site="ru").fields == IVAN
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    committer = vault._committers["ru"]
    assert committer.entries == 320
    assert committer.flushes < committer.entries  # some reads shared a commit
    vault.close()
    assert {f"c{t}.{n}" for t in range(8) for n in range(40)} <= read_purposes(deployment)
    vault = deployment.open()
    assert all(r.ok for r in vault.verify_audit("ru"))
    vault.close()
