import sys

from polyppl.cli import main

sys.exit(main())
