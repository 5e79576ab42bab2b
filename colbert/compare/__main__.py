import sys

from colbert.compare.cli import main

sys.exit(main())
