"""``python -m cpm_lab.cli`` (and ``torchrun -m cpm_lab.cli``) is ``cpm-lab``."""
import sys

from . import main

sys.exit(main())
