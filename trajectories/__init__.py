"""trajectories: when do language models learn grammar? Sweep minimal-pair tasks over training checkpoints."""

__version__ = "0.1.0"
