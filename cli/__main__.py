"""`python -m cli` runs the same command as the installed `coffer` script."""

from cli.main import main

main()
