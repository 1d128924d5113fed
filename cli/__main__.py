"""``python -m spl.cli``: the same entry point as the ``spl`` console script.

Kept apart from ``spl.cli.main`` so that module is imported once, under its own name, whichever way
the CLI is started (running ``main.py`` itself as ``__main__`` would load a second copy of the app).
"""

from spl.cli.main import run

run()
