"""`python -m colorgan` (also what `torchrun -m colorgan` runs)."""

import sys

from colorgan.cli import main

sys.exit(main())
