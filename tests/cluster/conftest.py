"""The cluster tests' shared setup: their helpers on the import path, and a 3-node cluster."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from etcdutil import need_etcd  # noqa: E402
from harness import Cluster  # noqa: E402


@pytest.fixture
def cluster():
    """A 3-node cluster with one etcd member, cleaned up after the test."""
    need_etcd()
    c = Cluster(3).start()
    yield c
    c.cleanup()
