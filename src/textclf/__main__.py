"""`python -m textclf` is the `textclf` command."""

from textclf.cli import main

main()
