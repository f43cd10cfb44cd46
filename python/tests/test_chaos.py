"""Several Python processes on one lock, under kills: of holders (kill -9)
and of etcd members. No two holders overlap, and the fenced counter counts
exactly the increments that were applied."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import locker
from etcd import Cluster

WORKER = os.path.join(os.path.dirname(__file__), "chaos_worker.py")


class Worker:
    def __init__(self, endpoints, name, counter, seconds):
        self.lines = []
        self.p = subprocess.Popen(
            [sys.executable, WORKER, ",".join(endpoints), name, counter, str(seconds)],
            stdout=subprocess.PIPE, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.split())

    def holding(self):
        return bool(self.lines) and self.lines[-1][0] in ("enter", "try", "ok")

    def join(self, timeout):
        self.p.wait(timeout)
        self.reader.join(5)


def check(workers, client, counter):
    """Holds (closed intervals), their overlaps, the increments reported
    applied, the uncertain ones (sent, then the worker was killed or got an
    error, e.g. Ambiguous when a member died with the answer), the counter."""
    intervals = []
    ok = 0
    uncertain = 0
    for w in workers:
        open_enter = None
        tried = False
        for rec in w.lines:
            if rec[0] == "enter":
                open_enter = float(rec[2])
            elif rec[0] == "try":
                tried = True
            elif rec[0] == "ok":
                ok += 1
                tried = False
            elif rec[0] == "error" and tried:
                uncertain += 1
                tried = False
            elif rec[0] == "exit":
                intervals.append((open_enter, float(rec[2])))
                open_enter = None
        if tried:
            uncertain += 1
    intervals.sort()
    overlaps = sum(1 for a, b in zip(intervals, intervals[1:]) if b[0] < a[1])
    final = int(client.get(counter) or b"0")
    return overlaps, ok, uncertain, final, len(intervals)


def run_workers(endpoints, name, seconds, n, chaos):
    client = locker.Client(endpoints)
    counter = name + "-counter"
    workers = [Worker(endpoints, name, counter, seconds) for _ in range(n)]
    kills = chaos(workers)
    for w in workers:
        w.join(seconds + 60)
    overlaps, ok, uncertain, final, held = check(workers, client, counter)
    print(
        f"chaos: {held} holds, {ok} increments applied and {uncertain} uncertain, "
        f"{kills} kills, counter {final}, {overlaps} overlaps"
    )
    assert overlaps == 0
    assert held > 10
    # No increment lost (every write was guarded by the lock), none counted
    # twice: the counter is the applied ones plus those of the uncertain
    # writes that landed.
    assert ok <= final <= ok + uncertain
    return final


def test_killing_python_holders_breaks_neither_exclusion_nor_the_counter(etcd, name):
    def chaos(workers):
        kills = 0
        end = time.monotonic() + 8
        while time.monotonic() < end:
            time.sleep(random.uniform(0.5, 1.5))
            for w in workers:
                if w.p.poll() is None and w.holding():
                    w.p.send_signal(signal.SIGKILL)
                    kills += 1
                    break
        return kills

    run_workers(etcd.endpoints, name, 10, 4, chaos)


@pytest.fixture
def cluster():
    c = Cluster(3)
    yield c
    c.stop()


def test_member_kills_of_a_three_member_cluster_break_neither(cluster, name):
    def chaos(workers):
        for i in (0, 1, 2):
            time.sleep(2)
            cluster.kill_member(i)
            time.sleep(2)
            cluster.start_member(i)
        return 0

    run_workers(cluster.endpoints, name, 14, 3, chaos)
