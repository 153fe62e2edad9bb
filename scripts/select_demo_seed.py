"""Pick the demo model among trained candidates (``demo_model.select``).

The pipeline lives in the ``demo_model`` package beside this script; see its module for the recipe.
"""

import sys

from demo_model.select import main

if __name__ == "__main__":
    sys.exit(main())
