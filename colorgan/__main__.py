"""`python -m colorgan` (also what `torchrun -m colorgan` runs)."""

import sys

from colorgan import ddp
from colorgan.cli import main

code = main()
if ddp.launched_by_torchrun():
    ddp.leave(code)  # a rank ends without the interpreter's teardown (see ddp.leave)
sys.exit(code)
