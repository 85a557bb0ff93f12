"""Shared test helpers (imported as `from helpers import ...`: pytest puts tests/ on sys.path)."""
import pytest
import torch

from nanorlsp.model import GPT, ModelConfig

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Autouse in the modules that import it: tiny matmuls gain nothing from threads, and on a
    busy 2-core box (a training run beside the tests) intra-op threads oversubscribe the CPU
    and make every op ~100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = dict(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=64)


def make_model(seed=0, scale=None, **overrides):
    """A tiny random model in eval mode. scale: re-draw every parameter ~ N(0, scale) so logits
    are far from uniform (the default init makes a near-constant network) and biases nonzero."""
    cfg = ModelConfig(**{**TINY, **overrides})
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    if scale is not None:
        g = torch.Generator().manual_seed(seed + 1000)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


def one_error_line(r) -> str:
    """A script's failure: non-zero exit and exactly one non-empty line on stderr (returned)."""
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    return lines[0]
