"""kopf handlers: one module per kind, one for what both kinds share, and the child-Job watcher.

Importing this package registers them all with kopf's default registry; the
steps they take are in `reconciler`.
"""

from . import both_kinds, datasetcuration, jobs, sftjob

__all__ = ["both_kinds", "datasetcuration", "jobs", "sftjob"]
