"""Put this checkout's package (src/ beside stages/) first on the import path.

Every stage script imports this before textclf. `dvc exp run --queue` and `dvc queue start` run
each experiment in a copy of the repository made when it was queued; without this, the stage
scripts there would import textclf from wherever it is installed (an editable install points at
the workspace), so a sweep queued before an edit would run the edited code while dvc.lock
records the queued snapshot's. With it, a stage always runs the code of the copy it belongs to.
"""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
