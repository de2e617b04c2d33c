"""python -m core.estimate: see core.estimate.cli."""
import sys

from core.estimate.cli import main

sys.exit(main())
