"""The node's process pool and what runs in its processes: the rebuildable pool,
feeding it chunks, running a chunk in a pool process, and the bytes that cross
between the node and its processes."""
