"""`python -m textclf` is the `textclf` command."""

from .cli import main

main()
