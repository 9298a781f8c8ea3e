"""Resource alarms: free disk space under the data dir and process memory against their limits;
publishers are blocked while one is set.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import os



log = logging.getLogger("usagi.broker")


class AlarmMixin:
    # ------------------------------------------------------------------ resource alarms
    def alarm_reason(self) -> str:
        return "low on disk" if "disk" in self.alarms else "low on memory"

    def set_alarm(self, name: str, active: bool):
        """A memory or disk alarm: block publishers (connection.blocked, stop reading) until it clears."""
        if active and name not in self.alarms:
            self.alarms.add(name)
            log.warning("%s resource limit alarm set; publishers will be blocked until it clears", name)
            for conn in list(self.connections):
                conn.set_blocked(True, self.alarm_reason())
        elif not active and name in self.alarms:
            self.alarms.discard(name)
            log.warning("%s resource limit alarm cleared", name)
            if not self.alarms:
                for conn in list(self.connections):
                    conn.alarm_cleared()
        self.flush_output()

    def check_resources(self):
        """Disk free space under the data dir and process memory against their limits."""
        c = self.config
        if c.data_dir and c.disk_free_limit:
            try:
                import shutil
                free = shutil.disk_usage(c.data_dir).free
                self.set_alarm("disk", free < c.disk_free_limit)
            except OSError:
                pass
        if c.memory_high_watermark:
            try:
                total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                self.set_alarm("memory", self.memory_usage() > total * c.memory_high_watermark)
            except (ValueError, OSError):
                pass

    def memory_usage(self) -> int:
        try:
            with open(f"/proc/{os.getpid()}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0
