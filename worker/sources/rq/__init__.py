"""RQ queues as a source of batches (``taskfan worker --rq-queue``). Nothing
outside this package imports RQ; importing this package alone imports no RQ."""
