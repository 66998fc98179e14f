"""One module per `sftctl` subcommand; each defines `register(subparsers)`.

`register` adds the subparser and sets `handler=<function(args) -> int>`.
"""
