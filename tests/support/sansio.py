"""A transport for driving the engine without sockets (sans-IO tests): what the engine writes is
kept in `data` (and each write is reported to `on_write`, if given); pausing is recorded."""
from __future__ import annotations


class Transport:
    def __init__(self, on_write=None):
        self.data = bytearray()
        self.paused = False
        self.closed = False
        self.on_write = on_write

    def write(self, data):
        self.data += data
        if self.on_write is not None:
            self.on_write(data)

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return default
