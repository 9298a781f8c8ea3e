"""Usagi: an AMQP 0-9-1 message broker, compatible with RabbitMQ's clients and tools."""

__version__ = "0.1.0"

# The RabbitMQ version whose behaviour Usagi reproduces and reports to clients (see README).
RABBITMQ_COMPAT_VERSION = "4.0.5"
