"""Where a node's batches come from: one package per source, each a plug-in
(``worker.sources.registry`` finds them; ``worker.sources.base`` is the protocol
they follow). ``streams`` is taskfan's own queues; docs/architecture.md lists
the others and says how to add one."""
