"""nanorlsp: a minimal, readable PyTorch implementation of RLSP (arXiv 2502.06773)."""
