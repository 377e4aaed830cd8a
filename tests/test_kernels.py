"""The fused slider kernels against the torch operations they replace."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prune_explorer.pruning import kernels

ROOT = Path(__file__).resolve().parent.parent


def test_masked_copy_equals_where_with_positive_zero():
    torch.manual_seed(0)
    dense = -torch.rand(10_001)  # negative weights: a zero written as -0.0 would show in the bits
    bucket = torch.randint(0, 256, (10_001,), dtype=torch.uint8)
    out = torch.full((10_001,), float("nan"))
    kernels.masked_copy(dense, bucket, 100, out)
    expected = torch.where(bucket >= 100, dense, torch.zeros(()))
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))  # +0.0, never -0.0


def test_bucket_passes_touch_exactly_the_buckets_in_range():
    torch.manual_seed(2)
    dense = -torch.rand(9_999)
    bucket = torch.randint(0, 256, (9_999,), dtype=torch.uint8)
    out = dense.clone()
    kernels.zero_buckets(out, bucket, 30, 200)
    inside = (bucket >= 30) & (bucket < 200)
    assert torch.equal(out.view(torch.int32), torch.where(inside, 0.0, dense).view(torch.int32))
    kernels.restore_buckets(out, dense, bucket, 30, 100)
    inside = (bucket >= 100) & (bucket < 200)
    assert torch.equal(out.view(torch.int32), torch.where(inside, 0.0, dense).view(torch.int32))
    kernels.zero_buckets(out, bucket, 5, 5)  # an empty range writes nothing
    assert torch.equal(out.view(torch.int32), torch.where(inside, 0.0, dense).view(torch.int32))


def test_scatters_touch_exactly_the_given_indices():
    torch.manual_seed(1)
    dense = torch.randn(5_000)
    out = dense.clone()
    idx = torch.randperm(5_000)[:1_234].to(torch.int32)
    kernels.zero_at(out, idx)
    expected = dense.clone()
    expected[idx.long()] = 0.0
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
    kernels.copy_at(out, dense, idx)
    assert torch.equal(out.view(torch.int32), dense.view(torch.int32))


def test_kernels_refuse_wrong_dtypes_and_layouts():
    with pytest.raises(ValueError, match="float32"):
        kernels.zero_at(torch.zeros(4, dtype=torch.float64), torch.arange(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="int32"):
        kernels.zero_at(torch.zeros(4), torch.arange(2))
    with pytest.raises(ValueError, match="1-D"):
        kernels.masked_copy(torch.zeros(2, 2), torch.zeros(4, dtype=torch.uint8), 1, torch.zeros(4))
    with pytest.raises(ValueError, match="uint8"):
        kernels.zero_buckets(torch.zeros(4), torch.zeros(4, dtype=torch.int32), 0, 1)


def test_kernels_keep_the_callers_torch_thread_count():
    """The first entry into numba's parallel layer resets torch's thread count (1 becomes 2); the kernels put
    it back. Only a fresh process shows it, so the check runs in one."""
    script = (
        "import torch\n"
        "from prune_explorer.pruning import kernels\n"
        "torch.set_num_threads(1)\n"
        "kernels.keep_from(torch.arange(64, dtype=torch.uint8), 8)\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split()[-1] == "1"
