"""Batch augmentation on the training device.

Each augmentation is a small callable `(image, label, generator) -> (image, label)` taking
image B x 1 x N x N x N and label B x L x N x N x N (class ids and weights as float
channels) on any device. The same geometric transform is applied to both: images are
interpolated trilinearly, labels by nearest neighbour so class ids stay integers. Random
parameters come from a CPU `torch.Generator`, so runs are repeatable on any device.
"""

import math

import torch
import torch.nn.functional as F


def _uniform(generator, *shape, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=generator)


class Compose:
    def __init__(self, *augmentations):
        self.augmentations = augmentations

    def __call__(self, image, label, generator):
        for augmentation in self.augmentations:
            image, label = augmentation(image, label, generator)
        return image, label


class RandomMirror:
    """Mirror each patch along each axis with probability p (keeps the missing-wedge geometry)."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, label, generator):
        flips = _uniform(generator, len(image), 3) < self.p
        images, labels = [], []
        for sample_image, sample_label, sample_flips in zip(image, label, flips):
            dims = [1 + axis for axis in range(3) if sample_flips[axis]]
            images.append(sample_image.flip(dims) if dims else sample_image)
            labels.append(sample_label.flip(dims) if dims else sample_label)
        return torch.stack(images), torch.stack(labels)


class RandomRot90XY:
    """Rotate each patch by a random multiple of 90 degrees in the XY plane."""

    def __call__(self, image, label, generator):
        turns = torch.randint(0, 4, (len(image),), generator=generator).tolist()
        image = torch.stack([torch.rot90(x, k, dims=(2, 3)) for x, k in zip(image, turns)])
        label = torch.stack([torch.rot90(x, k, dims=(2, 3)) for x, k in zip(label, turns)])
        return image, label


def _rotation_matrices(axes, angles):
    """Rodrigues' formula, batched: unit axes B x 3 and angles B (radians) -> B x 3 x 3."""
    x, y, z = axes.unbind(1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)
    sin, cos = angles.sin().view(-1, 1, 1), angles.cos().view(-1, 1, 1)
    return torch.eye(3) + sin * cross + (1 - cos) * cross @ cross


class RandomAffineElastic:
    """With probability p per patch: a rotation up to `max_degrees` about a random axis, an
    isotropic scaling in `scale`, and a smooth elastic deformation whose strain stays below
    `max_strain`; one resampling for all three, so the image is interpolated only once."""

    def __init__(self, p=0.5, max_degrees=20.0, scale=(0.95, 1.05), max_strain=0.04, control_points=4):
        self.p, self.max_degrees, self.scale = p, max_degrees, scale
        self.max_strain, self.control_points = max_strain, control_points

    def __call__(self, image, label, generator):
        batch, size = len(image), image.shape[2:]
        chosen = (_uniform(generator, batch) < self.p).float()
        axes = F.normalize(torch.randn(batch, 3, generator=generator), dim=1)
        angles = _uniform(generator, batch, low=-1, high=1) * math.radians(self.max_degrees) * chosen
        scales = 1 + (_uniform(generator, batch, low=self.scale[0], high=self.scale[1]) - 1) * chosen
        theta = torch.zeros(batch, 3, 4)
        theta[:, :, :3] = _rotation_matrices(axes, angles) * scales.view(-1, 1, 1)
        # A displacement d (normalised units, 2 per patch) between control points spaced
        # 2 / (n - 1) apart gives a strain of about d * (n - 1) / 2.
        amplitude = self.max_strain / (self.control_points - 1)
        coarse = _uniform(generator, batch, 3, *(self.control_points,) * 3, low=-1, high=1)
        coarse = coarse * amplitude * chosen.view(-1, 1, 1, 1, 1)
        device = image.device
        grid = F.affine_grid(theta.to(device), [batch, 1, *size], align_corners=False)
        displacement = F.interpolate(coarse.to(device), size=size, mode="trilinear", align_corners=True)
        grid = grid + displacement.permute(0, 2, 3, 4, 1)
        image = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="reflection",
                              align_corners=False)
        label = F.grid_sample(label, grid.to(label.dtype), mode="nearest", padding_mode="reflection",
                              align_corners=False)
        return image, label


def default_augmentation():
    return Compose(RandomMirror(), RandomRot90XY(), RandomAffineElastic())
