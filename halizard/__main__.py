import sys

from halizard.cli import main

sys.exit(main())
