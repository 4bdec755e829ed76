"""``python -m nclab …``: the course's command line (``nclab.course.cli``)."""

import sys

from .course.cli import main

if __name__ == "__main__":
    sys.exit(main())
