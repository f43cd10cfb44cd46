"""The sync API against a real etcd: locks, sessions, read-write locks,
semaphores, elections, watches, the audit, and the typed exceptions."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import locker


def wait_until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def queue_len(client, name):
    h = client.holders(name)
    return len(h.holders) + len(h.waiters)


REVOKED = ("expired", "key_deleted")


def test_a_lock_is_held_then_released(endpoints, name):
    client = locker.Client(endpoints)
    guard = client.lock(name, ttl=5, value="me")
    assert guard.key.startswith(name + "/")
    assert guard.value == b"me"
    assert client.holder(name).key == guard.key
    assert not guard.is_lost
    guard.release()
    assert client.holder(name) is None
    assert guard.is_lost and guard.lost_reason == "closed"
    guard.release()  # a second release does nothing


def test_with_releases_the_lock_even_when_the_body_raises(endpoints, name):
    client = locker.Client(endpoints)
    with pytest.raises(ZeroDivisionError):
        with client.lock(name) as guard:
            assert client.holder(name).fencing_token == guard.fencing_token
            1 / 0
    assert client.holder(name) is None


def test_waiters_get_the_lock_in_the_order_they_queued(endpoints, name):
    client = locker.Client(endpoints)
    first = client.lock(name)
    order = []
    threads = []
    for i in range(5):
        def wait(i=i):
            with client.lock(name, value=f"w{i}"):
                order.append(i)
        t = threading.Thread(target=wait)
        t.start()
        threads.append(t)
        wait_until(lambda: queue_len(client, name) == i + 2, what=f"waiter {i} queued")
    first.release()
    for t in threads:
        t.join(30)
    assert order == [0, 1, 2, 3, 4]


def test_fencing_tokens_grow_across_holders(endpoints, name):
    client = locker.Client(endpoints)
    tokens = []
    for _ in range(4):
        with client.lock(name) as g:
            tokens.append(g.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_try_lock_on_a_held_lock_raises_lock_held_with_the_holder(endpoints, name):
    client = locker.Client(endpoints)
    with client.lock(name, value="holder-a") as g:
        with pytest.raises(locker.LockHeld) as err:
            client.try_lock(name)
        assert isinstance(err.value, locker.LockerError)
        assert err.value.holder.key == g.key
        assert err.value.holder.value_str == "holder-a"
        assert queue_len(client, name) == 1  # nothing of ours left behind
    with client.try_lock(name) as g2:
        assert g2.fencing_token > g.fencing_token


def test_an_acquire_timeout_leaves_nothing_queued(endpoints, name):
    client = locker.Client(endpoints)
    with client.lock(name):
        start = time.monotonic()
        with pytest.raises(locker.AcquireTimeout):
            client.lock(name, timeout=0.3)
        assert time.monotonic() - start < 5
        assert queue_len(client, name) == 1


def test_errors_are_typed(endpoints, name):
    client = locker.Client(endpoints)
    with pytest.raises(locker.InvalidArgument):
        client.lock("")
    with pytest.raises(locker.InvalidArgument):
        client.lock(name, ttl=-1)
    with pytest.raises(locker.InvalidEndpoint):
        locker.Client(["http://[::1"])
    with pytest.raises(locker.Unreachable) as err:
        locker.Client(["http://127.0.0.1:1"], connect_timeout=0.5, request_timeout=0.5)
    assert isinstance(err.value, locker.ConnectivityError)
    with pytest.raises(locker.LimitMismatch):
        with client.semaphore(name, 2).acquire():
            client.semaphore(name, 3).acquire()
    session = client.session(5)
    with session.lock(name + "x"):
        with pytest.raises(locker.AlreadyLocked):
            session.lock(name + "x", timeout=1)
    session.close()
    with pytest.raises(locker.SessionClosed):
        session.lock(name + "y")


def test_lost_fires_when_an_operator_revokes_the_lease(etcd, endpoints, name):
    client = locker.Client(endpoints)
    guard = client.lock(name, ttl=3)
    fired = []
    done = threading.Event()
    guard.on_lost(lambda why: (fired.append(why), done.set()))
    assert guard.lost(timeout=0.1) is None
    etcd.etcdctl("lease", "revoke", format(guard.lease, "x"))
    # A revoke shows as the key's deletion or the keepalive's answer,
    # whichever comes first.
    assert guard.lost(timeout=5) in REVOKED
    assert guard.is_lost and guard.lost_reason in REVOKED
    assert done.wait(5) and len(fired) == 1 and fired[0] in REVOKED
    with pytest.raises(locker.LostError):
        guard.put(name + "-data", "late")
    with pytest.raises(locker.LostError):
        guard.release()


def test_lost_fires_when_the_lease_is_revoked_through_the_binding(endpoints, name):
    client = locker.Client(endpoints)
    other = locker.Client(endpoints)
    guard = client.lock(name, ttl=3)
    assert other.lease_revoke(guard.lease) is True
    assert guard.lost(timeout=5) in REVOKED


def test_guarded_put_writes_only_while_held(endpoints, name):
    client = locker.Client(endpoints)
    guard = client.lock(name)
    rev = guard.put(name + "-data", b"v1")
    assert rev > guard.fencing_token
    assert client.get(name + "-data") == b"v1"
    client.delete(guard.key)  # someone deletes the key by hand
    with pytest.raises(locker.LockLost):
        guard.put(name + "-data", b"v2")
    assert client.get(name + "-data") == b"v1"
    with pytest.raises(locker.LockLost):
        guard.release()  # its lease, still alive, is revoked; the loss is said


def test_a_session_holds_many_locks_on_one_lease(endpoints, name):
    client = locker.Client(endpoints)
    with client.session(5) as s:
        a = s.lock(name + "/a")
        b = s.try_lock(name + "/b")
        assert a.lease == b.lease == s.lease
        assert not s.is_lost
    assert s.is_lost and a.is_lost
    assert client.holder(name + "/a") is None and client.holder(name + "/b") is None


def test_a_resumed_session_keeps_its_place(endpoints, name):
    client = locker.Client(endpoints)
    s = client.session(10)
    g = s.lock(name)
    resumed = client.resume_session(s.lease)
    assert resumed.lease == s.lease
    g2 = resumed.lock(name)
    assert g2.fencing_token == g.fencing_token
    resumed.close()


def test_readers_share_and_a_writer_is_alone(endpoints, name):
    client = locker.Client(endpoints)
    r1 = client.read_lock(name)
    r2 = client.try_read_lock(name)
    with pytest.raises(locker.LockHeld):
        client.try_write_lock(name)
    with pytest.raises(locker.LockHeld):
        client.try_lock(name)
    modes = [h.mode for h in client.holders(name).holders]
    assert modes == ["shared", "shared"]
    r1.release()
    r2.release()
    with client.write_lock(name):
        with pytest.raises(locker.LockHeld):
            client.try_read_lock(name)


def test_a_semaphore_admits_its_permits(endpoints, name):
    client = locker.Client(endpoints)
    sem = client.semaphore(name, 2)
    assert (sem.name, sem.permits) == (name, 2)
    a = sem.acquire()
    b = sem.try_acquire()
    with pytest.raises(locker.LockHeld):
        sem.try_acquire()
    h = client.holders(name)
    assert h.permits == 2 and [x.mode for x in h.holders] == ["permit", "permit"]
    a.release()
    with sem.try_acquire():
        pass
    b.release()


def test_an_election_elects_proclaims_and_resigns(endpoints, name):
    client = locker.Client(endpoints)
    watch = client.observe(name)
    assert next(watch).kind == "no_leader"
    leader = client.campaign(name, "host-a")
    e = next(watch)
    assert (e.kind, e.key, e.value, e.token) == ("leader", leader.key, b"host-a", leader.fencing_token)
    assert client.leader(name).value == b"host-a"
    leader.proclaim("host-a:2")
    e = next(watch)
    assert (e.kind, e.value) == ("proclaimed", b"host-a:2")
    second = []
    t = threading.Thread(target=lambda: second.append(client.campaign(name, "host-b")))
    t.start()
    wait_until(lambda: queue_len(client, name) == 2, what="second candidate")
    leader.resign()
    t.join(10)
    e = next(watch)
    assert (e.kind, e.value) == ("leader", b"host-b")
    with second[0]:
        pass
    assert next(watch).kind == "no_leader"
    watch.close()
    with pytest.raises(locker.Released):
        leader.proclaim("too late")


def test_watch_lock_reports_each_change(endpoints, name):
    client = locker.Client(endpoints)
    with client.watch_lock(name) as w:
        snap = next(w)
        assert snap.kind == "snapshot" and snap.holder is None
        with client.lock(name) as g:
            e = next(w)
            assert e.kind == "acquired" and e.holder.key == g.key
        e = next(w)
        assert e.kind == "released" and e.holder.fencing_token == g.fencing_token


def test_the_audit_callback_gets_every_wire_call(endpoints, name):
    records = []
    client = locker.Client(endpoints, audit=records.append)
    with client.lock(name):
        pass
    wait_until(lambda: any(r["path"].endswith("LeaseRevoke") for r in records), what="revoke record")
    paths = [r["path"] for r in records]
    assert "/etcdserverpb.Lease/LeaseGrant" in paths and "/etcdserverpb.KV/Txn" in paths
    r = records[0]
    assert set(r) >= {"kind", "endpoint", "path", "request", "response", "status", "latency", "line"}
    assert r["line"].startswith("wire ")


def test_ctrl_c_interrupts_a_wait_and_leaves_nothing_queued(endpoints, name):
    client = locker.Client(endpoints)
    holder = client.lock(name)
    code = textwrap.dedent(f"""
        import sys, locker
        c = locker.Client({endpoints!r})
        print("waiting", flush=True)
        try:
            c.lock({name!r})
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            import time; time.sleep(1)
            sys.exit(3)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "waiting"
    wait_until(lambda: queue_len(client, name) == 2, what="the child queued")
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "interrupted"
    assert p.wait(10) == 3
    wait_until(lambda: queue_len(client, name) == 1, what="the child's key gone")
    holder.release()


def test_a_dropped_guard_frees_the_lock(endpoints, name):
    client = locker.Client(endpoints)
    g = client.lock(name, ttl=30)
    del g
    wait_until(lambda: client.holder(name) is None, timeout=5, what="the lock freed")


def test_the_gil_is_released_while_waiting(endpoints, name):
    client = locker.Client(endpoints)
    holder = client.lock(name)
    t = threading.Thread(target=lambda: client.lock(name).release())
    t.start()
    count = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        count += 1
    assert count > 10000
    holder.release()
    t.join(10)
    assert not t.is_alive()


def test_pid_value_default(endpoints, name):
    client = locker.Client(endpoints)
    with client.lock(name) as g:
        assert g.value.decode().endswith(f":{os.getpid()}")
