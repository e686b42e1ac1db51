"""Batch augmentation: shapes, range, identity at strength 0, exact known maps, determinism, training batches only."""

import pytest
import torch

from mnist_lib import Config, train
from mnist_lib.training.augment import SIDE, Augment, gaussian_kernel

BG = -0.4242
FULL = Augment(rotate=15, scale=0.1, shear=10, translate=2, elastic_alpha=2, elastic_sigma=4, background=BG)


def digits(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, SIDE * SIDE), BG)
    x[:, 200:500] = torch.rand(n, 300, generator=g) * 3 + BG  # ink in the middle rows
    return x


def test_shape_dtype_and_value_range_are_kept():
    x = digits()
    for dtype in (torch.float32, torch.bfloat16):
        out = FULL(x.to(dtype))
        assert out.shape == x.shape and out.dtype == dtype
    out = FULL(x)
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5  # bilinear mixes, padding is background
    assert not torch.equal(out, x)
    assert FULL(x.view(-1, SIDE, SIDE)).shape == (16, SIDE, SIDE)


def test_strength_zero_is_the_identity_and_the_default_is_off():
    x = digits()
    assert torch.equal(Augment(background=BG)(x), x)
    assert Augment.from_config(Config()) is None
    assert Augment.from_config(Config(aug_rotate=5)).rotate == 5


def test_deterministic_under_a_seed():
    x = digits()
    torch.manual_seed(3)
    a = FULL(x)
    torch.manual_seed(3)
    b = FULL(x)
    torch.manual_seed(4)
    c = FULL(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rotation_by_90_degrees_is_rot90():
    x = digits(4).view(4, 1, SIDE, SIDE)
    u = torch.zeros(5, 4)
    u[0] = 1.0  # the full +rotate
    theta = Augment(rotate=90)._affine(4, "cpu", u)
    grid = torch.nn.functional.affine_grid(theta, [4, 1, SIDE, SIDE], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_translation_by_whole_pixels_is_a_shift_with_background_fill():
    aug = Augment(translate=2, background=BG)
    x = digits(3)
    u = torch.zeros(5, 3)
    u[3] = 1.0  # x shift of +2 pixels: output column c samples input column c + 2
    theta = aug._affine(3, "cpu", u)
    img = x.view(3, 1, SIDE, SIDE) - BG
    grid = torch.nn.functional.affine_grid(theta, [3, 1, SIDE, SIDE], align_corners=False)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False) + BG
    expected = torch.full_like(out, BG)
    expected[..., :-2] = x.view(3, 1, SIDE, SIDE)[..., 2:]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_elastic_field_is_smooth_and_peaks_at_alpha_pixels():
    torch.manual_seed(0)
    disp = Augment(elastic_alpha=3, elastic_sigma=4)._displacement(8, "cpu")  # (8, 2, 784)
    peak = disp.abs().amax(dim=2)
    torch.testing.assert_close(peak, torch.full_like(peak, 2 * 3 / SIDE))
    field = disp.view(8, 2, SIDE, SIDE)
    for dim in (2, 3):
        step = (field.narrow(dim, 1, SIDE - 1) - field.narrow(dim, 0, SIDE - 1)).abs().max() / peak.max()
        assert step < 0.5  # neighbours move together: smoothed, not per-pixel noise
    k = gaussian_kernel(4.0)
    assert len(k) == 17 and k.sum().item() == pytest.approx(1.0) and torch.equal(k, k.flip(0))


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0, 8.0])
def test_low_rank_field_has_the_covariance_of_smoothed_white_noise(sigma):
    from mnist_lib.training.augment import smoothing_basis, smoothing_matrix

    # white noise R smoothed as S R S^T has row covariance S S^T; the basis A must give A A^T = S S^T
    s = smoothing_matrix(sigma)
    a = smoothing_basis(sigma)
    assert a.shape[1] < SIDE or sigma < 2
    assert torch.linalg.norm(a @ a.t() - s @ s.t()) / torch.linalg.norm(s @ s.t()) < 0.01
    # and empirically: 4000 low-rank fields against 4000 fields made the slow way, before peak scaling
    torch.manual_seed(0)
    slow = s @ torch.randn(4000, SIDE, SIDE) @ s.t()
    z = torch.randn(4000, a.shape[1], a.shape[1])
    fast = a @ z @ a.t()
    cov = lambda f: torch.cov(f.reshape(len(f), -1)[:, ::29].t())  # noqa: E731
    assert torch.linalg.norm(cov(fast) - cov(slow)) / torch.linalg.norm(cov(slow)) < 0.1


def test_sampling_grid_matches_affine_grid_plus_offsets():
    from mnist_lib.training.augment import sampling_grid

    torch.manual_seed(1)
    aug = Augment(rotate=20, scale=0.2, shear=15, translate=3, elastic_alpha=2)
    theta, disp = aug._affine(6, "cpu"), aug._displacement(6, "cpu")
    expected = torch.nn.functional.affine_grid(theta, [6, 1, SIDE, SIDE], align_corners=False)
    torch.testing.assert_close(sampling_grid(theta), expected, atol=1e-6, rtol=0)
    offsets = disp.transpose(1, 2).reshape(6, SIDE, SIDE, 2)  # pixel (row y, column x) -> (dx, dy)
    torch.testing.assert_close(sampling_grid(theta, disp), expected + offsets, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"aug_rotate": -1.0}, "aug_rotate must be in"),
        ({"aug_scale": 1.0}, "aug_scale must be in"),
        ({"aug_shear": 90.0}, "aug_shear must be in"),
        ({"aug_translate": 15.0}, "aug_translate must be in"),
        ({"aug_elastic_alpha": -2.0}, "aug_elastic_alpha must be in"),
        ({"aug_elastic_sigma": 0.0}, "aug_elastic_sigma must be in"),
    ],
)
def test_augmentation_fields_are_validated(changes, message):
    from mnist_lib.core.errors import UserError

    with pytest.raises(UserError, match=message):
        Config(**changes)


def test_training_augments_training_batches_only(small_data, monkeypatch):
    from mnist_lib.training.augment import StackedAugment

    seen = []
    real = StackedAugment.__call__
    monkeypatch.setattr(StackedAugment, "__call__", lambda self, x: seen.append(x.shape[1]) or real(self, x))
    x_val = small_data.x_val.clone()
    cfg = Config(epochs=1, batch_size=500, hidden=(64,), dropout=(0.0,), aug_rotate=10, aug_elastic_alpha=1.5)
    result = train(cfg, small_data, device="cpu", threads=2, progress=False)
    n = len(small_data.y_train)
    assert seen == [500] * (n // 500) + ([n % 500] if n % 500 else [])  # every training batch, nothing else
    assert torch.equal(small_data.x_val, x_val)
    assert result.status == "completed"


def test_smoothing_matrix_equals_reflect_padded_convolution():
    from mnist_lib.training.augment import smoothing_matrix

    f = torch.rand(5, SIDE)
    k = gaussian_kernel(3.0)
    pad = len(k) // 2
    conv = torch.nn.functional.conv1d(torch.nn.functional.pad(f.unsqueeze(1), (pad, pad), mode="reflect"), k.view(1, 1, -1)).squeeze(1)
    torch.testing.assert_close(f @ smoothing_matrix(3.0).t(), conv)


@pytest.mark.parametrize("field", ["aug_rotate", "aug_scale", "aug_shear", "aug_translate", "aug_elastic_alpha"])
def test_each_distortion_alone_turns_augmentation_on(field):
    aug = Augment.from_config(Config(**{field: 0.2}), background=BG)
    assert aug is not None and aug.active
    torch.manual_seed(0)
    assert (aug(digits()) - digits()).abs().max() > 0.05  # and it moves ink, beyond rounding


def square(side=8):
    """A centred side x side white square on background 0, as (1, 1, 28, 28)."""
    x = torch.zeros(1, 1, SIDE, SIDE)
    lo = (SIDE - side) // 2
    x[..., lo : lo + side, lo : lo + side] = 1.0
    return x


def warp(aug, u, x):
    theta = aug._affine(1, "cpu", u)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, SIDE, SIDE], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, align_corners=False)


@pytest.mark.parametrize("draw, side", [(1.0, 12), (-1.0, 4)])
def test_zoom_direction_larger_draws_enlarge_the_digit(draw, side):
    u = torch.zeros(5, 1)
    u[2] = draw  # zoom 1 + draw * scale: 1.5 enlarges the 8-pixel square to 12, 0.5 shrinks it to 4
    out = warp(Augment(scale=0.5), u, square(8))
    assert float(out.sum()) == pytest.approx(side * side, rel=0.02)  # ink area: 144 or 16, where inverted would give 16 or 144


def test_shear_direction_moves_lower_rows_left():
    """Shear +45 degrees: output (x, y) samples input (x + y, y), so a vertical bar leans like '/' (row r shifts by 13.5 - r)."""
    x = torch.zeros(1, 1, SIDE, SIDE)
    x[..., :, 14] = 1.0  # a vertical bar in column 14
    u = torch.zeros(5, 1)
    u[1] = 1.0
    out = warp(Augment(shear=45), u, x)[0, 0]
    cols = torch.arange(SIDE, dtype=torch.float32)
    for r in (4, 10, 17, 23):  # rows away from the edges, where the bar is still inside the frame
        centre = float((out[r] * cols).sum() / out[r].sum())
        assert centre == pytest.approx(14 + (13.5 - r), abs=0.05)


def test_the_draws_span_the_whole_range_in_both_directions():
    torch.manual_seed(0)
    theta = Augment(rotate=30)._affine(2000, "cpu")
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))  # rotation only: theta = [[cos, -sin], [sin, cos]]
    assert angle.min() < -28 and angle.max() > 28 and angle.abs().max() <= 30 + 1e-4
    assert abs(float(angle.mean())) < 2  # symmetric
    shift = Augment(translate=3)._affine(2000, "cpu")[:, :, 2] * SIDE / 2  # pixels
    assert shift.min() < -2.8 and shift.max() > 2.8 and shift.abs().max() <= 3 + 1e-4


def test_a_full_turn_through_the_call_is_rot90_with_background_fill(monkeypatch):
    """Augment.__call__ end to end, its random draws fixed at +1: rotate 90 is rot90, shift (+2, +2) leaves background behind."""
    import mnist_lib.training.augment as augment

    monkeypatch.setattr(augment.torch, "rand", lambda *shape, **kw: torch.ones(*shape))
    x = digits(3)
    out = Augment(rotate=90, background=BG)(x)
    expected = torch.rot90(x.view(3, SIDE, SIDE), 1, dims=(-2, -1)).reshape(3, -1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    shifted = Augment(translate=2, background=BG)(x).view(3, SIDE, SIDE)  # +2 pixels on both axes
    expected = torch.full_like(shifted, BG)
    expected[:, :-2, :-2] = x.view(3, SIDE, SIDE)[:, 2:, 2:]
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=0)


def test_augmented_versions_shows_each_image_then_n_seeded_draws():
    from mnist_lib.training.augment import augmented_versions

    images = (digits(2) - BG).clamp(0, 1).view(2, SIDE, SIDE)  # raw [0, 1] pixels, background 0
    aug = Augment(rotate=15, elastic_alpha=2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    out = augmented_versions(images, aug, n=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert out.shape == (2, 4, SIDE, SIDE)
    assert torch.equal(out[:, 0], images)  # first the original
    assert all((out[i, j] - images[i]).abs().max() > 0.05 for i in range(2) for j in range(1, 4))  # then 3 different draws
    assert not torch.equal(out[0, 1], out[0, 2])
    assert torch.equal(out, augmented_versions(images, aug, n=3, seed=7))
    assert not torch.equal(out, augmented_versions(images, aug, n=3, seed=8))


def test_kernel_radius_is_two_sigma_clipped_to_1_and_13():
    assert [len(gaussian_kernel(s)) for s in (0.2, 1.0, 2.6, 6.5, 8.0)] == [3, 5, 13, 27, 27]
    assert gaussian_kernel(1.0).dtype == torch.float32


def test_a_population_augments_each_member_with_its_own_strengths_and_sigma():
    """StackedAugment against F.affine_grid per member, on the same draws: padded bases, a member left untouched."""
    import torch.nn.functional as F

    from mnist_lib.training.augment import StackedAugment, smoothing_basis

    augs = [
        Augment(rotate=20, elastic_alpha=2, elastic_sigma=4, background=BG),
        None,
        Augment(translate=2, shear=10, scale=0.2, elastic_alpha=3, elastic_sigma=1.5, background=BG),
    ]
    assert smoothing_basis(4.0).shape[1] != smoothing_basis(1.5).shape[1]  # so the padding is exercised
    x = torch.stack([digits(5, seed=s) for s in range(3)])
    torch.manual_seed(0)
    out = StackedAugment(augs, "cpu")(x)
    torch.manual_seed(0)  # the same draws, in the documented order: elastic noise, then the affine parameters
    k = max(smoothing_basis(4.0).shape[1], smoothing_basis(1.5).shape[1])
    z, u = torch.randn(3, 10, k, k), torch.rand(5, 3, 5) * 2 - 1
    assert torch.equal(out[1], x[1])
    for m in (0, 2):
        a = augs[m]
        basis = smoothing_basis(a.elastic_sigma)
        km = basis.shape[1]
        field = (basis @ z[m, :, :km, :km] @ basis.t()).reshape(5, 2, SIDE * SIDE)
        disp = field * (2 * a.elastic_alpha / SIDE) / field.abs().amax(2, keepdim=True)
        grid = F.affine_grid(a._affine(5, "cpu", u[:, m]), (5, 1, SIDE, SIDE), align_corners=False)
        grid = grid + disp.transpose(1, 2).reshape(5, SIDE, SIDE, 2)
        expected = F.grid_sample(x[m].view(5, 1, SIDE, SIDE) - BG, grid, align_corners=False) + BG
        torch.testing.assert_close(out[m], expected.view(5, -1), atol=2e-5, rtol=0)


def test_a_population_step_makes_nothing_but_its_random_draws(monkeypatch):
    """Bases and grids are built with the StackedAugment, so a CUDA-graph capture of the step allocates none (12 sigmas here)."""
    from mnist_lib.training import augment as augment_module

    stacked = augment_module.StackedAugment([Augment(elastic_alpha=2, elastic_sigma=1 + s / 4) for s in range(12)], "cpu")
    for name in ("smoothing_basis", "smoothing_matrix", "_base_grid"):
        monkeypatch.setattr(augment_module, name, lambda *a, **k: pytest.fail("built during a step"))
    assert stacked(torch.stack([digits(4, seed=s) for s in range(12)])).shape == (12, 4, SIDE * SIDE)
