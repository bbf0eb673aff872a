"""fisherlab: Fisher-information learning dynamics for multilingual adapter fine-tuning.

The package is split so that the analysis side (``fisherlab.runs``,
``fisherlab.analysis``, ``fisherlab.plots``, ``fisherlab.report``) never imports
torch; the training side (``fisherlab.blocks``, ``fisherlab.fisher``,
``fisherlab.unfreezing``, ``fisherlab.train``) does. Nothing heavy is imported here.
"""

__version__ = "0.1.0"
