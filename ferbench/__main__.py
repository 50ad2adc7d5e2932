"""`python -m ferbench ...`: the same command line as the `ferbench` script."""

from .cli import main

if __name__ == "__main__":
    main()
