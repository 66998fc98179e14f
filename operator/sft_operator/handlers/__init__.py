"""kopf handlers, one module per kind (plus the child-Job watcher).

Importing this package registers them all with kopf's default registry.
"""

from . import datasetcuration, jobs, sftjob

__all__ = ["datasetcuration", "jobs", "sftjob"]
