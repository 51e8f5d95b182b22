"""`python -m minildm ...` is the same as the `minildm` console script."""
from minildm.cli import main

raise SystemExit(main())
