"""taskfan's own queues: every Redis command a node sends about queue streams,
leases, job states and its node record, and the stream entries it holds."""
