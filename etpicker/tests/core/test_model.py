import pytest
import torch

from etpicker.core.model import PatchNorm, ResUNet3D, coordinate_channels

torch.set_num_threads(1)


def test_default_model_is_close_to_the_reference_size():
    n_parameters = sum(p.numel() for p in ResUNet3D(n_classes=3).parameters())
    assert 2.0e6 <= n_parameters <= 2.9e6


@pytest.mark.parametrize("size", [(16, 16, 16), (8, 24, 16)])
def test_output_has_one_logit_channel_per_class_plus_background(size):
    torch.manual_seed(0)
    model = ResUNet3D(n_classes=2, widths=(4, 8, 8, 12)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, *size))
    assert logits.shape == (2, 3, *size)
    assert torch.isfinite(logits).all()


def test_variants_without_coordconv_or_pyramid_run():
    for coordconv, pyramid in [(False, True), (True, False)]:
        model = ResUNet3D(1, widths=(4, 4, 8, 8), coordconv=coordconv, pyramid=pyramid)
        assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_patch_not_multiple_of_8_is_refused():
    with pytest.raises(ValueError, match="multiples of 8"):
        ResUNet3D(1, widths=(4, 4, 8, 8))(torch.randn(1, 1, 12, 16, 16))


def test_coordinates_span_minus_one_to_one_per_axis():
    coords = coordinate_channels(torch.zeros(2, 5, 3, 4, 6))
    assert coords.shape == (2, 3, 3, 4, 6)
    assert coords[0, 0, 0, 0, 0] == -1 and coords[0, 0, -1, 0, 0] == 1  # z channel varies along z
    assert torch.all(coords[:, 2, :, :, -1] == 1)  # x channel is 1 on the last x plane


def test_gradients_reach_the_first_layer():
    model = ResUNet3D(1, widths=(4, 4, 8, 8))
    model(torch.randn(1, 1, 16, 16, 16)).square().mean().backward()
    assert model.encoders[0].convs[0][0].weight.grad.abs().sum() > 0


def test_mixed_precision_forward_works():
    model = ResUNet3D(2, widths=(4, 4, 8, 8)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(1, 1, 16, 16, 16))
    assert logits.shape == (1, 3, 16, 16, 16) and torch.isfinite(logits.float()).all()


def test_an_input_of_the_patch_size_is_normalised_over_all_of_it_as_in_training():
    torch.manual_seed(0)
    model = ResUNet3D(2, widths=(4, 8, 8, 8), coordconv=False).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model.normalise_like(16)(x), plain)


def test_a_larger_input_is_normalised_over_patch_sized_cells():
    # Two cells along x with their own contrast: near each cell's centre the voxels are
    # normalised by that cell's statistics, as a patch there would be, not by the tile's.
    torch.manual_seed(1)
    norm = PatchNorm(3, level=1)
    norm.cell = 10.0  # a 20-voxel patch, halved once
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(1, 3, 10, 10, 20)
    x[..., 10:] = 5 * x[..., 10:] + 3
    with torch.no_grad():
        tile = norm(x)
        for cell in (slice(0, 10), slice(10, 20)):
            alone = torch.nn.functional.instance_norm(x[..., cell], weight=norm.weight, bias=norm.bias, eps=norm.eps)
            inner = slice(0, 5) if cell.start == 0 else slice(5, 10)  # on the cell's side of its centre
            torch.testing.assert_close(tile[..., cell][..., inner], alone[..., inner], atol=1e-4, rtol=1e-4)
        whole = torch.nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        assert (tile[..., :5] - whole[..., :5]).abs().mean() > 0.1  # what the tile's statistics would give


def test_picking_without_gradients_gives_the_training_forward_and_follows_new_weights():
    """Without gradients CoordConv's share is a cached field (ResidualBlock._first_conv): it
    must equal joining the channels, and a change of weights must not leave it stale."""
    torch.manual_seed(0)
    model = ResUNet3D(2, widths=(4, 8, 8, 8)).eval()
    x = torch.randn(2, 1, 16, 24, 16)
    with torch.no_grad():
        cached = model(x)
    joined = model(x).detach()  # gradients on: the channels joined to the input
    assert torch.allclose(cached, joined, atol=1e-5)
    other = ResUNet3D(2, widths=(4, 8, 8, 8))
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, other.eval()(x).detach(), atol=1e-5)
    assert not torch.allclose(after, cached, atol=1e-3)
