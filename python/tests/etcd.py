"""Real etcd processes for the tests: one member or a cluster, on free
loopback ports, in a temporary data directory, stopped at the end.

The binary is $ETCD_BIN, else `etcd` on PATH; etcdctl is $ETCDCTL_BIN, else
the one beside etcd, else `etcdctl` on PATH.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid


def _die_with_parent():
    """Linux: the member gets SIGKILL when the test process dies, so a
    killed test run leaves no etcd behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def etcd_bin():
    found = os.environ.get("ETCD_BIN") or shutil.which("etcd")
    if not found:
        raise RuntimeError("no etcd: set ETCD_BIN or put etcd on PATH")
    return found


def etcdctl_bin():
    if os.environ.get("ETCDCTL_BIN"):
        return os.environ["ETCDCTL_BIN"]
    beside = os.path.join(os.path.dirname(etcd_bin()), "etcdctl")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("etcdctl")
    if not found:
        raise RuntimeError("no etcdctl: set ETCDCTL_BIN")
    return found


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """`size` etcd members; `endpoints` are their client URLs."""

    def __init__(self, size=1, tls=None):
        """`tls`: (cert, key, ca) files: serve https:// with cert and key;
        etcdctl trusts ca."""
        self.dir = tempfile.mkdtemp(prefix="locker-py-etcd-")
        self.tls = tls
        ports = free_ports(2 * size)
        scheme = "https" if tls else "http"
        self.client_urls = [f"{scheme}://127.0.0.1:{p}" for p in ports[:size]]
        self.peer_urls = [f"http://127.0.0.1:{p}" for p in ports[size:]]
        self.names = [f"m{i}" for i in range(size)]
        self.token = uuid.uuid4().hex
        self.procs = [None] * size
        for i in range(size):
            self.start_member(i, state="new")
        self.wait_healthy()

    @property
    def endpoints(self):
        return list(self.client_urls)

    def start_member(self, i, state="existing"):
        initial = ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls))
        args = [
            etcd_bin(),
            f"--name={self.names[i]}",
            f"--data-dir={self.dir}/{self.names[i]}",
            f"--listen-client-urls={self.client_urls[i]}",
            f"--advertise-client-urls={self.client_urls[i]}",
            f"--listen-peer-urls={self.peer_urls[i]}",
            f"--initial-advertise-peer-urls={self.peer_urls[i]}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ]
        if self.tls:
            args += [f"--cert-file={self.tls[0]}", f"--key-file={self.tls[1]}"]
        log = open(f"{self.dir}/{self.names[i]}.log", "ab")
        self.procs[i] = subprocess.Popen(
            args, stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent
        )
        log.close()

    def kill_member(self, i):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()

    def etcdctl(self, *args, timeout=30, check=True, endpoints=None):
        cmd = [etcdctl_bin(), f"--endpoints={','.join(endpoints or self.endpoints)}"]
        if self.tls:
            cmd.append(f"--cacert={self.tls[2]}")
        cmd += args
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, env=env)

    def wait_healthy(self, deadline=30.0):
        end = time.monotonic() + deadline
        while True:
            r = self.etcdctl("put", "locker-py-health", "ok", timeout=10, check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > end:
                raise RuntimeError(f"etcd did not become healthy: {r.stderr}")
            time.sleep(0.1)

    def stop(self):
        for i in range(len(self.procs)):
            self.kill_member(i)
        shutil.rmtree(self.dir, ignore_errors=True)
