import sys

from outcrop.cli import main

sys.exit(main())
