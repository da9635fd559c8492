"""``python -m cpm_lab`` is ``cpm-lab``."""
import sys

from .cli import main

sys.exit(main())
