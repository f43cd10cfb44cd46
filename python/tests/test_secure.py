"""Secured clusters: etcd auth (user and password) and TLS (a CA file)."""

import shutil
import subprocess

import pytest

import locker
from etcd import Cluster


def test_auth_takes_a_user_and_refuses_a_wrong_password(name):
    cluster = Cluster(1)
    try:
        cluster.etcdctl("user", "add", "root:rootpw")
        cluster.etcdctl("auth", "enable")
        client = locker.Client(cluster.endpoints, user="root", password="rootpw")
        with client.lock(name) as g:
            assert client.holder(name).key == g.key
        with pytest.raises(locker.AuthFailed) as err:
            locker.Client(cluster.endpoints, user="root", password="wrong")
        assert "wrong" not in str(err.value)
        with pytest.raises(locker.InvalidArgument):
            locker.Client(cluster.endpoints, password="no-user")
    finally:
        cluster.stop()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_tls_with_a_ca_file(tmp_path, name):
    if not shutil.which("openssl"):
        pytest.skip("no openssl")
    d = str(tmp_path)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=locker-py-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr", cwd=d)
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=d)
    cluster = Cluster(1, tls=(f"{d}/server.pem", f"{d}/server.key", f"{d}/ca.pem"))
    try:
        client = locker.Client(cluster.endpoints, ca=f"{d}/ca.pem")
        with client.lock(name) as g:
            assert g.fencing_token > 0
        with pytest.raises(locker.TlsError):
            locker.Client(cluster.endpoints, connect_timeout=2)  # the system's roots do not know this CA
        with pytest.raises(locker.CertFile):
            locker.Client(cluster.endpoints, ca=f"{d}/missing.pem")
    finally:
        cluster.stop()
