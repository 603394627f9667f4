import sys

from polyppl.cli import main

if __name__ == "__main__":  # not when a fork server or spawned process imports this module
    sys.exit(main())
