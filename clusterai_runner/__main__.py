"""Allow ``python -m clusterai_runner``."""

import sys

from clusterai_runner.cli import main

sys.exit(main())
