"""Exit codes of `python -m sft_trainer` that the operator's Jobs act on."""

from __future__ import annotations

# "This can never work as configured" (a bad config, an unreadable dataset):
# the Job's podFailurePolicy fails the Job on it at once instead of retrying.
EXIT_CONFIG_ERROR = 42
