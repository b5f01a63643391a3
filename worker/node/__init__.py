"""The node and its wiring: the main loop (``node``), its I/O threads, the typed
messages they post to it, when it reads (``demand``) and how it stops (``stopping``)."""
