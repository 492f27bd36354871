"""Allow ``python -m scratchpack``."""

from scratchpack.cli import main

if __name__ == "__main__":
    main()
