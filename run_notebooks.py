#!/usr/bin/env python
"""Execute the infopt notebooks headless: ``python run_notebooks.py --device cpu``.

See ``python run_notebooks.py --help``; the logic lives in :mod:`infopt.run.runner`.
"""

import sys

from infopt.run.runner import main

if __name__ == "__main__":
    sys.exit(main())
