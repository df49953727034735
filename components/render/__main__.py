"""`python -m components.render`: the render command (cli.py)."""

import sys

from components.render.cli import main

sys.exit(main())
