"""The 3D-ResUNet: residual blocks, CoordConv at every block, image-pyramid input."""
import torch
from torch import nn
from torch.nn import functional as F

from .settings import DEFAULT_WIDTHS

HEAD_PREFIX = "head."  # the state_dict keys of the classifying layer (ResUNet3D.head)


def coordinate_channels(like):
    """Three channels holding the normalised z, y, x position (-1..1) over the volume of `like`."""
    batch, _, *size = like.shape
    axes = [torch.linspace(-1, 1, n, device=like.device, dtype=like.dtype) for n in size]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grids).unsqueeze(0).expand(batch, -1, -1, -1, -1)


def _linear_weights(size, cells, like):
    """(size, cells) weights that interpolate values at `cells` cell centres linearly to
    `size` voxels (F.interpolate's align_corners=False, constant beyond the outer centres)."""
    where = ((torch.arange(size, device=like.device, dtype=like.dtype) + 0.5) * cells / size - 0.5).clamp(0, cells - 1)
    low = where.floor().long()
    high = (low + 1).clamp(max=cells - 1)
    weights = torch.zeros(size, cells, device=like.device, dtype=like.dtype)
    weights[torch.arange(size), low] += 1 - (where - low)
    weights[torch.arange(size), high] += where - low
    return weights


class PatchNorm(nn.InstanceNorm3d):
    """Instance normalisation, over the training patch as the network learnt it. On a larger
    input (an inference tile) the statistics are those of patch-sized cells, interpolated
    between the cells' centres, so that each voxel is normalised about as a patch around it
    would be: statistics over a whole large tile changed the picks (bench/README.md).
    `level`: how many times the network halved its input before this layer."""

    def __init__(self, channels, level):
        super().__init__(channels, affine=True)
        self.level = level
        self.cell = None  # voxels of a training patch at this level (ResUNet3D.normalise_like)

    def forward(self, x):
        size = x.shape[2:]
        cells = (1, 1, 1) if self.cell is None else tuple(max(1, round(n / self.cell)) for n in size)
        if cells == (1, 1, 1):
            return super().forward(x)
        # A cell's statistics from every 2nd (4th...) voxel of it: thousands of voxels still.
        step = max(1, int(self.cell // 16))
        sample = x[:, :, ::step, ::step, ::step].float()
        mean = F.adaptive_avg_pool3d(sample, cells)
        variance = (F.adaptive_avg_pool3d(sample * sample, cells) - mean * mean).clamp_min(0)
        gain = self.weight.view(1, -1, 1, 1, 1) * torch.rsqrt(variance + self.eps)
        offset = self.bias.view(1, -1, 1, 1, 1) - mean * gain
        # x * gain + offset, both interpolated axis by axis (cheap products of small factors)
        for axis, (n, c) in enumerate(zip(size, cells)):
            weights = _linear_weights(n, c, gain)
            gain = torch.movedim(torch.movedim(gain, 2 + axis, -1) @ weights.T, -1, 2 + axis)
            offset = torch.movedim(torch.movedim(offset, 2 + axis, -1) @ weights.T, -1, 2 + axis)
        return torch.addcmul(offset.to(x.dtype), x, gain.to(x.dtype))


def _conv_norm(in_channels, out_channels, level, kernel=3, stride=1):
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        PatchNorm(out_channels, level),
    )


class ResidualBlock(nn.Module):
    """Three 3x3x3 convolutions with a shortcut; CoordConv channels join the input."""

    def __init__(self, in_channels, out_channels, coordconv, level):
        super().__init__()
        self.coordconv = coordconv
        conv_in = in_channels + (3 if coordconv else 0)
        self.convs = nn.ModuleList([_conv_norm(conv_in, out_channels, level),
                                    _conv_norm(out_channels, out_channels, level),
                                    _conv_norm(out_channels, out_channels, level)])
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Conv3d(in_channels, out_channels, 1, bias=False))
        self._coordinate_field = (None, None, {})  # (key, input's weights, fields by dtype): _first_conv

    def _first_conv(self, x):
        """convs[0] over the input joined by the coordinate channels. The convolution is linear
        and the channels depend only on the input's size, so their share is a fixed field: without
        gradients (picking, validation) it is computed once per size and weights and added,
        which makes CoordConv cost almost nothing there (it cost a third of the network)."""
        conv, norm = self.convs[0]
        if not self.coordconv:
            return norm(conv(x))
        if torch.is_grad_enabled():
            return norm(conv(torch.cat([x, coordinate_channels(x)], dim=1)))
        weight = conv.weight
        key = (tuple(x.shape[2:]), x.device, weight.data_ptr(), weight._version)
        if self._coordinate_field[0] != key:
            self._coordinate_field = (key, weight[:, :-3].contiguous(), {})
        _, input_weight, fields = self._coordinate_field
        h = F.conv3d(x, input_weight, padding=conv.padding)
        if h.dtype not in fields:  # per dtype (autocast's or float32), computed in float32
            with torch.autocast(x.device.type, enabled=False):
                coordinates = coordinate_channels(torch.empty(1, 0, *x.shape[2:], device=x.device))
                fields[h.dtype] = F.conv3d(coordinates, weight[:, -3:].float(), padding=conv.padding).to(h.dtype)
        field = fields[h.dtype]
        return norm(h.add_(field))

    def forward(self, x):
        h = F.elu(self._first_conv(x))
        h = F.elu(self.convs[1](h))
        h = self.convs[2](h)
        return F.elu(h + self.shortcut(x))


class ResUNet3D(nn.Module):
    """U-Net with 4 encoder levels (3 down-samplings by stride-2 3x3x3 convolutions),
    3 decoder levels (transposed-convolution up-sampling, skips added), one residual
    block per level, and n_classes + 1 output logits (channel 0 = background)."""

    def __init__(self, n_classes, widths=DEFAULT_WIDTHS, coordconv=True, pyramid=True):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4:
            raise ValueError(f"ResUNet3D needs 4 widths, got {widths}")
        self.n_classes = n_classes
        self.pyramid = pyramid
        extra = 1 if pyramid else 0
        self.encoders = nn.ModuleList([ResidualBlock(1, widths[0], coordconv, 0)])
        self.downs = nn.ModuleList()
        for level in range(1, 4):
            self.downs.append(_conv_norm(widths[level - 1], widths[level - 1], level, stride=2))
            self.encoders.append(ResidualBlock(widths[level - 1] + extra, widths[level], coordconv, level))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in (2, 1, 0):
            self.ups.append(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(ResidualBlock(widths[level], widths[level], coordconv, level))
        self.head = nn.Conv3d(widths[0], n_classes + 1, 1)

    def normalise_like(self, patch):
        """Normalise inputs larger than `patch` (voxels) over patch-sized cells (PatchNorm)."""
        for module in self.modules():
            if isinstance(module, PatchNorm):
                module.cell = patch / 2 ** module.level
        return self

    def forward(self, x):
        return self.head(self.features(x))

    def features(self, x):
        """The last decoder block's output (widths[0] channels at the input's size): what the
        head classifies, and what self-supervised pre-training (pretrain.py) learns."""
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"ResUNet3D expects a B×1×Z×Y×X batch, got shape {tuple(x.shape)}")
        if any(n % 8 for n in x.shape[2:]):
            raise ValueError(f"ResUNet3D needs patch sizes that are multiples of 8, got {tuple(x.shape[2:])}")
        skips = []
        h = self.encoders[0](x)
        image = x
        for down, encoder in zip(self.downs, self.encoders[1:]):
            skips.append(h)
            h = F.elu(down(h))
            if self.pyramid:
                image = F.avg_pool3d(image, 2)
                h = torch.cat([h, image], dim=1)
            h = encoder(h)
        for up, decoder in zip(self.ups, self.decoders):
            h = decoder(up(h) + skips.pop())
        return h


def build_model(config):
    """The (untrained) network a model config describes."""
    model = ResUNet3D(len(config["classes"]), widths=tuple(config["widths"]),
                      coordconv=config.get("coordconv", True), pyramid=config.get("pyramid", True))
    return model.normalise_like(config["patch"])
