"""Allow ``python -m scratchpack``."""

from scratchpack.entry import main

if __name__ == "__main__":
    main()
