"""`persona` subcommands, one module each (see `headless/cli.py`)."""
