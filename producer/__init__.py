"""The producer side: enqueue jobs and read their results.

from producer import Client, Executor
"""

from producer.client import Client
from producer.executor import Executor
from producer.job import Job, Progress

__all__ = ["Client", "Executor", "Job", "Progress"]
