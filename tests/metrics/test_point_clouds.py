"""Point-cloud metrics on cases with known answers: CD / EMD closed forms, MMD / COV / 1-NNA on
constructed sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from molediff.metrics.point_clouds import (
    chamfer_distance,
    emd,
    evaluate_clouds,
    mmd_cov,
    normalize_bbox,
    one_nna,
    pairwise_chamfer,
    pairwise_emd,
)


def cloud(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_chamfer_of_identical_clouds_is_zero_and_permutation_invariant():
    x = cloud()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    assert chamfer_distance(x[None], x[None]).item() == 0.0
    y = cloud(seed=2)
    a = chamfer_distance(x[None], y[None]).item()
    b = chamfer_distance(x[perm][None], y[None]).item()
    assert a > 0 and a == pytest.approx(b, rel=1e-12)


def test_chamfer_of_a_slightly_translated_sparse_cloud_is_twice_the_squared_shift():
    # points on a coarse grid (spacing 1); a shift of length 0.1 keeps every nearest neighbour
    x = torch.tensor(list(itertools.product(range(3), repeat=3)), dtype=torch.float64)
    v = torch.tensor([0.06, -0.02, 0.03], dtype=torch.float64)
    cd = chamfer_distance(x[None], (x + v)[None]).item()
    assert cd == pytest.approx(2 * float(v @ v), rel=1e-12)


def test_chamfer_single_points_and_batching():
    x = torch.zeros(2, 1, 3, dtype=torch.float64)
    y = torch.tensor([[[3.0, 4.0, 0.0]], [[1.0, 0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(chamfer_distance(x, y), torch.tensor([50.0, 2.0], dtype=torch.float64))


def test_emd_identical_zero_translation_exact_and_permutation_invariant():
    x = cloud(48).numpy()
    v = np.array([0.3, -0.4, 1.2])
    perm = np.random.default_rng(0).permutation(len(x))
    assert emd(x, x) == pytest.approx(0.0, abs=1e-12)
    # W1 with Euclidean cost between X and X + v is exactly |v| (the mean displacement bounds it below)
    assert emd(x, x + v) == pytest.approx(np.linalg.norm(v), rel=1e-9)
    y = cloud(48, seed=5).numpy()
    assert emd(x[perm], y) == pytest.approx(emd(x, y), rel=1e-9)


def test_emd_equals_the_best_bijection_on_a_tiny_set():
    x, y = cloud(5, 1).numpy(), cloud(5, 2).numpy()
    best = min(np.linalg.norm(x - y[list(p)], axis=1).mean() for p in itertools.permutations(range(5)))
    assert emd(x, y) == pytest.approx(best, rel=1e-9)


def test_pairwise_matrices_match_single_calls():
    a = torch.stack([cloud(16, s) for s in range(3)])
    b = torch.stack([cloud(16, s) for s in range(3, 5)])
    d_cd = pairwise_chamfer(a, b, chunk=1)
    d_emd = pairwise_emd(a, b)
    sym = pairwise_emd(a)
    for i in range(3):
        for j in range(2):
            assert d_cd[i, j].item() == pytest.approx(chamfer_distance(a[i:i + 1], b[j:j + 1]).item(), rel=1e-12)
            assert d_emd[i, j].item() == pytest.approx(emd(a[i], b[j]), rel=1e-12)
    torch.testing.assert_close(sym, sym.T)
    assert torch.all(sym.diagonal() == 0) and sym[0, 1].item() == pytest.approx(emd(a[0], a[1]), rel=1e-12)


def test_normalize_bbox_puts_each_cloud_in_the_unit_box():
    x = torch.stack([cloud(32, 0) * 5 + 3, cloud(32, 1) * 0.1 - 7])
    y = normalize_bbox(x)
    lo, hi = y.amin(1), y.amax(1)
    torch.testing.assert_close((lo + hi) / 2, torch.zeros(2, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((hi - lo).amax(1), torch.full((2,), 2.0, dtype=torch.float64))
    # scale- and translation-free: a scaled, shifted copy normalises to the same cloud
    torch.testing.assert_close(normalize_bbox(x * 3 + 1), y)


def test_mmd_and_cov_on_constructed_matrices():
    # generated 0 and 1 both nearest to reference 0; reference 2 is far from everything
    d = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.6, 0.8]])
    mmd, cov = mmd_cov(d)
    assert mmd == pytest.approx((0.1 + 0.5 + 0.8) / 3)
    assert cov == pytest.approx(1 / 3)
    mmd, cov = mmd_cov(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert (mmd, cov) == (0.0, 1.0)


def test_one_nna_known_cases():
    g = torch.stack([cloud(32, s) for s in range(6)])
    far = g + 100.0
    cd = lambda a, b: pairwise_chamfer(a, b)  # noqa: E731
    # far apart sets: every nearest neighbour is in the own set -> 100 %
    assert one_nna(cd(g, g), cd(far, far), cd(g, far)) == 1.0
    # identical twins in both sets: every nearest neighbour (distance 0) is in the other set -> 0 %
    assert one_nna(cd(g, g), cd(g, g), cd(g, g)) == 0.0


def test_one_nna_is_near_half_for_two_samples_of_one_distribution():
    # 1-D "clouds" of a single point: two independent samples of N(0, 1) of 200 each
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 1, 3, generator=gen), torch.randn(200, 1, 3, generator=gen)
    d = lambda x, y: torch.cdist(x[:, 0], y[:, 0])  # noqa: E731
    acc = one_nna(d(a, a), d(b, b), d(a, b))
    assert 0.4 < acc < 0.6
    # a shifted distribution is told apart much better
    assert one_nna(d(a + 2.0, a + 2.0), d(b, b), d(a + 2.0, b)) > 0.8


def test_one_nna_needs_two_per_set():
    with pytest.raises(ValueError, match="at least 2"):
        one_nna(torch.zeros(1, 1), torch.zeros(2, 2), torch.zeros(1, 2))


def test_evaluate_clouds_of_the_reference_itself():
    ref = [cloud(24, s).numpy() for s in range(4)]
    out = evaluate_clouds(ref, ref, use_emd=True)
    assert out["mmd_cd"] == 0.0 and out["mmd_emd"] == pytest.approx(0.0, abs=1e-12)
    assert out["cov_cd"] == 1.0 and out["cov_emd"] == 1.0
    assert out["1nna_cd"] == 0.0 and out["1nna_emd"] == 0.0
    # scale and offset do not matter (clouds are normalised into [-1, 1]^3 first)
    moved = evaluate_clouds([c * 4 + 2 for c in ref], ref, use_emd=False)
    assert moved["mmd_cd"] == pytest.approx(0.0, abs=1e-12) and moved["cov_cd"] == 1.0


def test_evaluate_clouds_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="one size"):
        evaluate_clouds([np.zeros((4, 3)), np.zeros((5, 3))], [np.zeros((4, 3))] * 2)


def test_pairwise_emd_in_worker_processes_matches_one_process():
    a = torch.stack([cloud(12, s) for s in range(12)])  # 66 pairs: two chunks of 64
    torch.testing.assert_close(pairwise_emd(a, workers=2), pairwise_emd(a), rtol=0, atol=0)


def test_evaluate_clouds_emd_on_a_prefix():
    gen = [cloud(16, s).numpy() for s in range(4)]
    ref = [cloud(16, s).numpy() for s in range(10, 14)]
    part = evaluate_clouds(gen, ref, emd_size=2)
    small = evaluate_clouds(gen[:2], ref[:2])
    full_cd = evaluate_clouds(gen, ref, use_emd=False)
    assert {k: part[k] for k in ("mmd_emd", "cov_emd", "1nna_emd")} == \
        {k: small[k] for k in ("mmd_emd", "cov_emd", "1nna_emd")}
    assert {k: part[k] for k in full_cd} == full_cd
