"""Strategy consumers: stateless workers in the `strategy-workers` consumer group."""
