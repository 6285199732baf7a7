"""``python -m edgekit``: the same command line as the ``edgekit`` script (edgekit.cli.main)."""

from edgekit.cli.main import run

if __name__ == "__main__":
    run()
