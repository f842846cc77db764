"""`python -m eebert_cli.cli`."""

from . import main

main()
