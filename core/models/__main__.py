"""python -m core.models: see core.models.cli."""
from core.models.cli import main

raise SystemExit(main())
