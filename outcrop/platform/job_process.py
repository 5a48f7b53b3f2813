"""The process of one job: `python -m outcrop.platform.job_process JOB_ID --data-dir DIR`.

A module of its own, so that `outcrop.platform.jobs` is imported once under its real name (running
that module with -m would define its tables a second time, as `__main__`).
"""

import sys

from outcrop.platform.jobs import main

sys.exit(main())
