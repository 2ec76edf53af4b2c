"""Operating a running pipeline from outside (tooling: the engine never imports it): `jobs`
(submit, cancel, savepoint through Flink) and `kafka_io` (publish requests, read results)."""
