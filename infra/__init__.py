"""The ground floor: settings, database and Kafka clients, tables, metrics, the embedded runtime and
the service contract. It imports only `schemas/` and third-party packages; everything above imports it."""
