"""What a node does besides running batches: the heartbeat's extra duties,
its counters and stats, Prometheus metrics and the backlog for autoscalers."""
