"""Measure the demo model's alignment figures and write its card (``demo_model.evaluate``).

The pipeline lives in the ``demo_model`` package beside this script; see its module for the recipe.
"""

import sys

from demo_model.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
