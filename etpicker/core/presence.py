"""Cheap box labels for pre-training: what a box of a tomogram holds (after docs/sources/002).

A box label names what a box centred on a point holds: a particle of some class, or none
(NO_PARTICLE), as a user tells it quickly in a gallery of candidate boxes. The labels are
written in the coordinates format, one CSV per tomogram with the tomogram's stem. With
`pretrain --box-labels`, each step also asks the encoder what each box of a batch holds
(the bottleneck's central cells, pooled, through a linear classifier; cross-entropy) next
to the self-supervised objective. The classifier is not kept, since train builds its own
head; what transfers is an encoder that has learnt to tell the classes apart.
"""
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import InputError
from .normalise import robust_stats
from .region_contrast import random_transforms, transformed
from .train_data import pair_by_stem

NO_PARTICLE = "none"  # the class name of a box that holds no particle
BOX_SHIFT = 3  # voxels: a crop's centre lies this far from its box's at most (the user's box is not exact)
MIN_PATCH = 24  # voxels: a bottleneck of 3 cells or more a side, so that its central cells are not all of it


class BoxStream:
    """Patch-sized crops around labelled boxes, standardised as training does, with their
    label index (0: NO_PARTICLE). Each label is drawn equally often, so that many empty
    boxes or one common class do not drown the others."""

    def __init__(self, pairs, patch, rng):
        if patch < MIN_PATCH:
            raise InputError(f"--box-labels need a patch of at least {MIN_PATCH} voxels, got {patch}: the encoder "
                             f"tells what a box holds from the cells at its centre, and a smaller patch has none")
        self.patch, self.rng = patch, rng
        names = sorted({name for _, coords in pairs for name in coords.names} - {NO_PARTICLE})
        self.labels = [NO_PARTICLE] + names
        self.boxes = {label: [] for label in self.labels}  # label -> [(source index, zyx)]
        self.sources = []
        for tomogram, coords in pairs:
            if min(tomogram.data.shape) < patch:
                raise InputError(f"{tomogram.path}: {tomogram.data.shape} voxels (z, y, x) is smaller than the "
                                 f"{patch}-voxel patch; give a smaller --patch")
            for name, xyz in zip(coords.names, coords.xyz):
                self.boxes[name].append((len(self.sources), xyz[::-1]))
            self.sources.append((tomogram.data, *robust_stats(tomogram.data, str(tomogram.path))))
        self.labels = [label for label in self.labels if self.boxes[label]]
        if len(self.labels) < 2:
            raise InputError(f"--box-labels: every box is labelled {self.labels[0] if self.labels else 'nothing'}; "
                             f"give at least two kinds of box (a class and {NO_PARTICLE!r}, or two classes)")

    @classmethod
    def read(cls, paths, tomograms, patch, rng, voxel_size=None):
        """The boxes of the CSVs at `paths`, each paired with the tomogram of the same stem."""
        stems = {Path(path).stem for path in paths}
        chosen = [tomogram.path for tomogram in tomograms if tomogram.stem in stems]
        return cls(pair_by_stem(chosen, paths, "--box-labels", voxel_size), patch, rng)

    def counts(self):
        return {label: len(self.boxes[label]) for label in self.labels}

    def batch(self, size):
        """(B x 1 x patch^3 crops, B label indices)."""
        crops, targets = [], []
        for target in self.rng.integers(0, len(self.labels), size=size):
            boxes = self.boxes[self.labels[target]]
            index, zyx = boxes[int(self.rng.integers(0, len(boxes)))]
            data, centre, scale = self.sources[index]
            shifted = np.asarray(zyx) + self.rng.uniform(-BOX_SHIFT, BOX_SHIFT, 3)
            z, y, x = (int(np.clip(round(c) - self.patch // 2, 0, n - self.patch)) for c, n in zip(shifted, data.shape))
            block = np.asarray(data[z:z + self.patch, y:y + self.patch, x:x + self.patch], dtype=np.float32)
            crops.append((block - centre) / scale)
            targets.append(int(target))
        return torch.from_numpy(np.stack(crops)[:, None]), torch.tensor(targets)


def central_cells(h):
    """B x C: the mean of the central cell (odd sizes) or 2 cells (even) along each axis,
    where the box's centre lies: a crop holds neighbours too, and the label is the centre's.
    (A mean over all cells would also be nearly constant: the network normalises them.)"""
    for axis in (2, 3, 4):
        n = h.shape[axis]
        h = h.narrow(axis, (n - 1) // 2, 2 - n % 2)
    return h.mean((2, 3, 4))


class PresenceHead(nn.Module):
    """The classifier of box labels on a ResUNet3D's bottleneck (its widths[3] channels)."""

    def __init__(self, channels, n_labels):
        super().__init__()
        self.classify = nn.Linear(channels, n_labels)

    def loss(self, network, crops, targets, generator):
        """(cross-entropy, {"presence": ..., "presence_accuracy": ...}) on mirrored and
        turned crops."""
        view = transformed(crops, random_transforms(len(crops), generator))
        bottleneck, _ = network.encode(view)
        logits = self.classify(central_cells(bottleneck).float())
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(1) == targets).float().mean().item()
        return loss, {"presence": loss.item(), "presence_accuracy": accuracy}
