"""pinhole: does a long-term pin of a file hole stay coherent with the file?"""

from __future__ import annotations

import os
import sys

# A `pinhole matrix` guest's Python starts without site (-S: its .pth files were over a second
# of the start under TCG); the site directories of the host's Python come in this variable
# (multikernel.python_env()) and go last on the path, where site would have put them.
SITE_PATH = "PINHOLE_SITE_PATH"
sys.path += [p for p in os.environ.get(SITE_PATH, "").split(":") if p and p not in sys.path]
