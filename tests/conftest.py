"""Under pytest-xdist (`python -m pytest -n 2`, what CI runs) two tests share the two cores: each
runs torch on one thread, and so do the scripts it starts (OMP_NUM_THREADS, inherited), or
OpenMP's spinning threads of one test oversubscribe the core the other is using."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
