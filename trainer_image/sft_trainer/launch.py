"""`python -m sft_trainer.launch TORCHRUN_ARGS...`: torchrun that keeps the config-error exit code.

torchrun exits 1 whatever its workers exited with, so a worker's
EXIT_CONFIG_ERROR (42: a bad config, an unreadable dataset) would reach the
Job as an ordinary failure, and the Job would retry a run that can never
work. This launcher runs torchrun in-process (same arguments, same
behaviour) and exits 42 when any worker did, so `podFailurePolicy` fails the
Job at once; any other worker failure exits 1 and is retried.
"""

from __future__ import annotations

import sys

from .config import EXIT_CONFIG_ERROR


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as err:
        print(err, file=sys.stderr)  # torchrun's table of the failed ranks and their exit codes
        exit_codes = {failure.exitcode for failure in err.failures.values()}
        return EXIT_CONFIG_ERROR if EXIT_CONFIG_ERROR in exit_codes else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
