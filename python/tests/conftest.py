import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from etcd import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def etcd():
    cluster = Cluster(1)
    yield cluster
    cluster.stop()


@pytest.fixture
def endpoints(etcd):
    return etcd.endpoints


@pytest.fixture
def name(request):
    """A lock name of its own for each test."""
    return f"py/{request.node.name}/{uuid.uuid4().hex[:8]}"
