"""`python -m trajectories` runs the `trajectories` command."""

import sys

from trajectories.cli import main

sys.exit(main())
