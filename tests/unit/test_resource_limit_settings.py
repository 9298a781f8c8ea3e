"""Changing the memory and disk limits at run time (what rabbitmqctl set_vm_memory_high_watermark
and set_disk_free_limit do): the limit reported changes, and the alarm follows it at once."""
from __future__ import annotations

import tempfile

from usagi.core.alarms import total_memory
from usagi.core.broker import Broker, Config


def test_memory_watermark_relative_and_absolute():
    b = Broker(Config(memory_high_watermark=0.4))
    assert b.memory_limit() == round(total_memory() * 0.4)
    used = b.memory_usage()
    b.set_memory_high_watermark(absolute=used // 2)
    assert b.memory_limit() == used // 2
    assert "memory" in b.alarms                 # evaluated at once, against the new limit
    b.set_memory_high_watermark(relative=0.5)
    assert b.memory_limit() == round(total_memory() * 0.5)
    assert "memory" not in b.alarms


def test_disk_free_limit_absolute_and_relative():
    with tempfile.TemporaryDirectory() as d:
        b = Broker(Config(data_dir=d))
        assert b.disk_free_limit() == 50_000_000
        free = b.disk_free()
        assert free and free > 0
        b.set_disk_free_limit(absolute=free * 4)
        assert b.disk_free_limit() == free * 4 and "disk" in b.alarms
        b.set_disk_free_limit(relative=0.0001)
        assert b.disk_free_limit() == round(total_memory() * 0.0001)
        assert "disk" not in b.alarms
