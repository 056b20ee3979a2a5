"""Self-supervised objectives that pre-train the ResUNet3D's encoder and decoder on
unlabelled patches (pretrain.py runs them).

`regions`: region-level contrast, after the method of docs/sources/004 built in 3D. The
network's own decoder features divide each patch into K regions (a soft assignment to K
learnt prototypes); region pooling gives each region a first-order grey-level
representation (its mean and spread of intensity) and a deep semantic one (its pooled
features through a projection head). The grey-level loss asks for little intensity
spread within regions and much between them; the semantic loss (InfoNCE) asks that a
region seen in two augmented views of a patch be alike and unlike every other region of
the batch. The views' geometric transforms (mirrors, quarter turns) are undone on the
features, so each voxel, and so each region, corresponds between the views.

`masked`: the simpler objective it is compared with: blocks of the patch are replaced by
noise and the network restores their (lightly smoothed) density from the context.
"""
import torch
from torch import nn
from torch.nn import functional as F

N_REGIONS = 8
TEMPERATURE = 0.2  # of the semantic InfoNCE
ASSIGNMENT_TEMPERATURE = 0.1  # sharpness of the soft assignment to regions
MIN_REGION_SHARE = 0.01  # regions holding less of a patch are left out of the semantic loss
PROJECTION = 32  # size of the semantic representation
MASK_BLOCK = 4  # voxels, the side of a masked block
MASK_SHARE = 0.3


def smoothed(image):
    """The density at the scale of a few voxels: a 3x3x3 mean. At the SNR of tomograms a
    single voxel's value is mostly noise, which neither loss should chase."""
    return F.avg_pool3d(image, 3, stride=1, padding=1, count_include_pad=False)


def random_transforms(batch, generator):
    """Per patch: mirror flags (z, y, x) and quarter turns in XY, each exactly invertible."""
    flips = (torch.rand(batch, 3, generator=generator) < 0.5).tolist()
    turns = torch.randint(0, 4, (batch,), generator=generator).tolist()
    return list(zip(flips, turns))


def transformed(x, transforms, inverse=False):
    """B x C x Z x Y x X with each patch's transform applied (or undone)."""
    done = []
    for sample, (flips, turns) in zip(x, transforms):
        dims = [1 + axis for axis in range(3) if flips[axis]]
        if not inverse:
            sample = sample.flip(dims) if dims else sample
            sample = torch.rot90(sample, turns, dims=(2, 3))
        else:
            sample = torch.rot90(sample, -turns, dims=(2, 3))
            sample = sample.flip(dims) if dims else sample
        done.append(sample)
    return torch.stack(done)


def photometric(x, generator):
    """A random gain, offset and added noise per patch: what the views differ by in density."""
    batch = len(x)
    gain = 0.8 + 0.4 * torch.rand(batch, 1, 1, 1, 1, generator=generator)
    offset = 0.4 * torch.rand(batch, 1, 1, 1, 1, generator=generator) - 0.2
    sigma = 0.5 * torch.rand(batch, 1, 1, 1, 1, generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    return x * gain.to(x) + offset.to(x) + (sigma * noise).to(x)


def grey_level_loss(assignment, image):
    """Within-region over total intensity variance of the (smoothed) image under a soft
    assignment B x K x V: 0 when regions are uniform and differ, 1 when they do not differ."""
    mass = assignment.sum(2) + 1e-6  # B x K
    mean = (assignment * image).sum(2) / mass  # each region's first-order grey level
    within = (assignment * (image - mean.unsqueeze(2)) ** 2).sum((1, 2))
    overall = image.mean(2)
    between = (mass * (mean - overall) ** 2).sum(1)
    return (within / (within + between + 1e-6)).mean()


def semantic_loss(pooled_a, pooled_b, share, temperature=TEMPERATURE):
    """Symmetric InfoNCE between the two views' region representations B x K x D: a region's
    positive is itself in the other view, its negatives every other region of the batch.
    Regions holding under MIN_REGION_SHARE of their patch are left out."""
    keep = (share > MIN_REGION_SHARE).flatten()
    a = F.normalize(pooled_a.flatten(0, 1)[keep], dim=1)
    b = F.normalize(pooled_b.flatten(0, 1)[keep], dim=1)
    if len(a) < 2:
        return a.sum() * 0  # nothing to contrast yet
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class RegionContrast(nn.Module):
    """The pretext heads of the `regions` objective on top of a ResUNet3D's features."""

    def __init__(self, channels, n_regions=N_REGIONS):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(n_regions, channels))
        self.projection = nn.Sequential(nn.Linear(channels, 64), nn.ReLU(), nn.Linear(64, PROJECTION))

    def assignment(self, features):
        """B x K x V soft assignment of each voxel to the prototypes (cosine similarity)."""
        flat = F.normalize(features.flatten(2), dim=1)
        similarity = torch.einsum("bcv,kc->bkv", flat, F.normalize(self.prototypes, dim=1))
        return torch.softmax(similarity / ASSIGNMENT_TEMPERATURE, dim=1)

    def pooled(self, features, assignment):
        """Region pooling: B x K x D projected mean feature of each region."""
        flat = features.flatten(2)
        mean = torch.einsum("bkv,bcv->bkc", assignment, flat) / (assignment.sum(2, keepdim=True) + 1e-6)
        return self.projection(mean)

    def loss(self, network, image, generator, grey_weight=1.0):
        """(total, {"grey": ..., "semantic": ...}) on a batch of standardised patches."""
        views = []
        for _ in range(2):
            transforms = random_transforms(len(image), generator)
            view = photometric(transformed(image, transforms), generator)
            views.append(transformed(network.features(view), transforms, inverse=True).float())
        assignments = [self.assignment(features) for features in views]
        regions = (assignments[0] + assignments[1]) / 2  # the regions both views agree on
        grey = grey_level_loss(regions, smoothed(image).flatten(2).float())
        share = regions.mean(2)
        semantic = semantic_loss(self.pooled(views[0], regions), self.pooled(views[1], regions), share)
        return semantic + grey_weight * grey, {"grey": grey.item(), "semantic": semantic.item()}


class MaskedRestoration(nn.Module):
    """The pretext head of the `masked` objective: one channel restoring the density."""

    def __init__(self, channels):
        super().__init__()
        self.restore = nn.Conv3d(channels, 1, 1)

    def loss(self, network, image, generator):
        batch, _, *size = image.shape
        coarse = [n // MASK_BLOCK for n in size]
        mask = (torch.rand(batch, 1, *coarse, generator=generator) < MASK_SHARE).float()
        mask = F.interpolate(mask, size=size, mode="nearest").to(image)
        transforms = random_transforms(batch, generator)
        noise = torch.randn(image.shape, generator=generator).to(image)
        view = transformed(image * (1 - mask) + noise * mask, transforms)
        restored = transformed(self.restore(network.features(view)), transforms, inverse=True).float()
        target = smoothed(image).float()
        error = ((restored - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)
        loss = error / target.var().clamp_min(1e-6)  # 1: no better than the mean
        return loss, {"restoration": loss.item()}


def pretext(objective, channels):
    """The pretext module of an objective (one of settings.PRETRAIN_OBJECTIVES)."""
    return RegionContrast(channels) if objective == "regions" else MaskedRestoration(channels)
