"""Entry point for `pulumi up`: the program lives in components/program.py."""

from components.program import main

main()
