"""`sftctl`: the one command-line tool of TrustDoc SFT.

Each subcommand lives in its own module under `sftctl.commands` and exposes
`register(subparsers)`; the CLI discovers them, so adding a command touches no
other file. Heavy imports (torch, kopf) happen inside the command that needs
them, so `sftctl --help` is instant and works with only the base install.
"""
