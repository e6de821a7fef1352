"""``python -m bmaml_robot.compare``: ``bmaml-compare``."""

import sys

from bmaml_robot.compare.cli import main

sys.exit(main())
