"""The exchange and queues shared by the worker and the client.

One direct exchange, 'tasks', routes each message to the queue whose name equals
its routing key: 'hipri', 'midpri' or 'lopri'.
"""
from kombu import Exchange, Queue

PRIORITIES = ("hipri", "midpri", "lopri")

task_exchange = Exchange("tasks", type="direct")
task_queues = [Queue(name, task_exchange, routing_key=name) for name in PRIORITIES]
