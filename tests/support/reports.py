"""Warnings that carry a long test's figures into the pytest summary (defined here, in a module the
pytest-xdist controller can import, so that a worker can send them to it)."""


class FaultRunReport(UserWarning):
    """The cluster fault run's counts and failover times."""
