"""Train the bundled demo model from scratch (``demo_model.train``).

The pipeline lives in the ``demo_model`` package beside this script; see its module for the recipe.
"""

import sys

from demo_model.train import main

if __name__ == "__main__":
    sys.exit(main())
