"""`python -m pydp_r.demo` (what `make demo` runs)."""

import sys

from pydp_r.demo.cli import main

sys.exit(main())
