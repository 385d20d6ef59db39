"""CLI subcommand groups; each module exposes `register(subparsers)`."""
