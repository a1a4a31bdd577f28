"""The offline demo world, apart from the harness: a toy English grammar (grammar.py) and a mini Pythia suite trained
on it (train.py); run.py drives the harness over it (`trajectories demo`). Nothing here is needed to sweep real
suites."""
