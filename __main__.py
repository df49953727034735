"""Entry point for `pulumi up`: the program lives in components/stack.py."""

from components.stack import main

main()
