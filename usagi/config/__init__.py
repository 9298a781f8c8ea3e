"""What an operator sets around the broker: RabbitMQ's configuration file (rabbitconf), sizes with
units (units) and the log's outputs (logs).

Pure standard library, below every other layer, so that the server, the management API and the
command line can all use it.
"""
