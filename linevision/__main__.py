import sys

from linevision.cli import main

sys.exit(main())
