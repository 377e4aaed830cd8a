import sys

from prune_explorer.cli import main

sys.exit(main())
