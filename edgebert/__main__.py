"""`python -m edgebert`: the same as the `edgebert` console script."""

from edgebert.cli import main

if __name__ == "__main__":
    main()
