"""The same script with ``adapters.AdapterTrainer`` (saves adapters, not the whole model).

Only the Trainer class differs from ``own_trainer.py``; the three fisherlab lines are the
same (``FisherlabRun(...)``, ``run.attach(trainer)``, ``run.finish(trainer, results=...)``)::

    python examples/adapter_trainer.py --tiny --run_dir runs/tiny-adapter-0
"""

from __future__ import annotations

import sys
from pathlib import Path

from adapters import AdapterTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_trainer import main  # noqa: E402  (the example beside this one)

if __name__ == "__main__":
    main(trainer_class=AdapterTrainer)
