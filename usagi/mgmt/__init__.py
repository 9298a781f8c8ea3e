"""RabbitMQ-compatible management HTTP API (`/api/...`), Prometheus metrics and the dashboard's home.

`service.management_service` is what the server composes in; `api` holds the routes and handlers,
`formats` the JSON shapes RabbitMQ emits, `ops` the few engine operations the API needs that the
broker facade does not offer as one call, `stats` the rate sampler and `metrics` the exposition.
"""
