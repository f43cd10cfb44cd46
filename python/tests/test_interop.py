"""One lock, three tools: the binding, etcdctl and the Rust CLI wait for
each other on the same names."""

import os
import subprocess
import time

import pytest

import locker
from etcd import etcdctl_bin


def locker_cli():
    """The Rust CLI: $LOCKER_CLI, else target/debug/locker of this
    repository (cargo build --features cli)."""
    path = os.environ.get("LOCKER_CLI") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target", "debug", "locker"
    )
    if not os.access(path, os.X_OK):
        pytest.skip("no Rust CLI: cargo build --features cli, or set LOCKER_CLI")
    return path


def etcdctl(etcd, *args, **kw):
    env = dict(os.environ, ETCDCTL_API="3")
    cmd = [etcdctl_bin(), f"--endpoints={','.join(etcd.endpoints)}", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def still_running(p, secs=1.0):
    try:
        p.wait(secs)
        return False
    except subprocess.TimeoutExpired:
        return True


def test_a_python_holder_blocks_etcdctl_lock(etcd, name):
    client = locker.Client(etcd.endpoints)
    guard = client.lock(name)
    p = etcdctl(etcd, "lock", name, "echo", "etcdctl-got-it")
    assert still_running(p), p.communicate()
    guard.release()
    out, err = p.communicate(timeout=15)
    assert "etcdctl-got-it" in out, err


def test_an_etcdctl_holder_blocks_python(etcd, name):
    client = locker.Client(etcd.endpoints)
    p = etcdctl(etcd, "lock", name)
    key = p.stdout.readline().strip()  # etcdctl prints the key it holds
    assert key.startswith(name + "/")
    try:
        with pytest.raises(locker.LockHeld) as err:
            client.try_lock(name)
        assert err.value.holder.key == key
        with pytest.raises(locker.AcquireTimeout):
            client.lock(name, timeout=0.5)
    finally:
        p.terminate()  # etcdctl unlocks on SIGTERM
        p.wait(10)
    with client.lock(name, timeout=10) as g:
        assert g.key != key


def test_a_python_leader_is_seen_by_etcdctl_elect(etcd, name):
    client = locker.Client(etcd.endpoints)
    with client.campaign(name, "python-leader"):
        p = etcdctl(etcd, "elect", "--listen", name)
        lines = [p.stdout.readline().strip(), p.stdout.readline().strip()]
        p.terminate()
        p.wait(10)
        assert lines[1] == "python-leader", lines
        candidate = etcdctl(etcd, "elect", name, "etcdctl-candidate")
        assert still_running(candidate)
    assert candidate.stdout.readline().startswith(name + "/")  # elected once Python resigned
    candidate.terminate()
    candidate.wait(10)


def test_a_python_holder_makes_the_cli_try_exit_75(etcd, name):
    cli = locker_cli()
    client = locker.Client(etcd.endpoints)
    env = dict(os.environ, LOCKER_ENDPOINTS=",".join(etcd.endpoints))
    with client.lock(name):
        r = subprocess.run([cli, "try", name, "--", "true"], env=env, capture_output=True, timeout=30)
        assert r.returncode == 75, r.stderr
    r = subprocess.run([cli, "try", name, "--", "true"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_a_cli_holder_blocks_python(etcd, name):
    cli = locker_cli()
    client = locker.Client(etcd.endpoints)
    env = dict(os.environ, LOCKER_ENDPOINTS=",".join(etcd.endpoints))
    p = subprocess.Popen(
        [cli, "lock", name, "--", "sh", "-c", 'echo "$LOCKER_FENCING_TOKEN"; sleep 30'],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        token = int(p.stdout.readline())
        with pytest.raises(locker.LockHeld) as err:
            client.try_lock(name)
        assert err.value.holder.fencing_token == token
        waiting = time.monotonic()
        p.terminate()  # forwarded to the command; the CLI then releases
        with client.lock(name, timeout=15) as g:
            assert g.fencing_token > token
        assert time.monotonic() - waiting < 15
    finally:
        p.kill()
        p.wait(10)


def test_the_cli_sees_a_python_leader_and_python_sees_a_cli_leader(etcd, name):
    cli = locker_cli()
    client = locker.Client(etcd.endpoints)
    env = dict(os.environ, LOCKER_ENDPOINTS=",".join(etcd.endpoints))
    with client.campaign(name, "python-leader"):
        r = subprocess.run([cli, "holder", name], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "python-leader" in r.stdout, r
    p = subprocess.Popen([cli, "elect", name, "cli-leader", "--", "sleep", "30"], env=env)
    try:
        deadline = time.monotonic() + 15
        while client.leader(name) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.leader(name).value == b"cli-leader"
        with pytest.raises(locker.AcquireTimeout):
            client.campaign(name, "python-second", timeout=0.5)
    finally:
        p.terminate()
        p.wait(10)
    with client.campaign(name, "python-again", timeout=15):
        pass
