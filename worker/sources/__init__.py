"""Where a node's batches come from: the queue streams (``streams``, taskfan's
own queues) and RQ queues (``rq``, the ``taskfan[rq]`` extra)."""
