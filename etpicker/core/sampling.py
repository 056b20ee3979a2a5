"""Training patches: one per annotated particle (random offset) plus background ones at
random places.

Patches are read from the tomogram's memory map one at a time and standardised with the
tomogram's robust statistics; labels are painted for the patch box only.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError
from .labels import paint_labels


@dataclass
class PatchSource:
    """One tomogram as training material.

    `centres_zyx`/`class_ids` are all its annotations (they label every patch); only
    those flagged in `trainable` get a patch of their own. Patches stay inside
    [0, limit_zyx) so they never overlap a held-out validation block; the limit must be at
    least the patch size on every axis."""
    data: np.ndarray
    centre: float
    scale: float
    centres_zyx: np.ndarray
    class_ids: np.ndarray
    trainable: np.ndarray
    limit_zyx: tuple


def patch_origin(centre_zyx, patch, limit_zyx):
    """The corner of a patch centred on a voxel, moved inside [0, limit) (limit >= patch)."""
    origin = np.floor(np.asarray(centre_zyx, dtype=np.float64) + 0.5).astype(np.int64) - patch // 2
    return np.clip(origin, 0, np.asarray(limit_zyx, dtype=np.int64) - patch)


class PatchSampler:
    """Per epoch: every trainable particle once and `background_fraction` x as many random
    background patches.

    A particle patch is centred on its particle moved by up to `max_offset` voxels per axis.
    Training passes patch/2 - pad: picking keeps each tile's central patch - 2 pad voxels,
    and particles should appear evenly over that whole region (the default, patch/3, is
    that for the default pad, patch/6). With patch/5, the network (which sees voxel
    positions through CoordConv) learnt that targets sit mid-patch: on realistic tomograms
    its picks within 8.7 voxels of a tile's centre had precision 0.52-0.59 and recall
    0.91-1.00, those beyond 0.70 and 0.80 (bench/README.md)."""

    def __init__(self, sources, diameters, label_type, patch, background_fraction=0.15, max_offset=None):
        self.sources = sources
        self.diameters = list(diameters)
        self.label_type = label_type
        self.patch = patch
        self.max_offset = patch // 3 if max_offset is None else int(max_offset)
        n_particles = sum(int(source.trainable.sum()) for source in sources)
        self.n_background = int(round(background_fraction * n_particles))
        self.n_patches = n_particles + self.n_background

    def _around(self, index, centre, rng):
        offset = rng.integers(-self.max_offset, self.max_offset + 1, size=3)
        return index, patch_origin(centre + offset, self.patch, self.sources[index].limit_zyx)

    def epoch_plan(self, rng):
        """(source index, patch origin) for every patch of one epoch, shuffled."""
        plan = []
        for index, source in enumerate(self.sources):
            for centre in source.centres_zyx[source.trainable]:
                plan.append(self._around(index, centre, rng))
        for _ in range(self.n_background):
            index = int(rng.integers(len(self.sources)))
            limit = np.asarray(self.sources[index].limit_zyx)
            centre = rng.uniform(0, limit)
            plan.append((index, patch_origin(centre, self.patch, limit)))
        return [plan[i] for i in rng.permutation(len(plan))]

    def read(self, index, origin):
        """(standardised image, class ids, label weight) of one patch."""
        source = self.sources[index]
        lo = np.asarray(origin)
        hi = lo + self.patch
        image = np.asarray(source.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
        if not np.isfinite(image).all():  # the statistics saw only a subsample of the tomogram
            raise InputError(f"a training tomogram holds NaN or infinite values (in the patch at z,y,x {lo.tolist()})")
        image = (image - source.centre) / source.scale
        reach = max(self.diameters)
        near = np.all((source.centres_zyx > lo - reach) & (source.centres_zyx < hi + reach), axis=1)
        ids, weight = paint_labels((self.patch,) * 3, source.centres_zyx[near], source.class_ids[near],
                                   self.diameters, self.label_type, origin=lo)
        return image, ids, weight

    def batches(self, plan, batch_size):
        """Tensors (image B×1×N³, label B×2×N³ holding class ids and weights) per batch."""
        for start in range(0, len(plan), batch_size):
            patches = [self.read(index, origin) for index, origin in plan[start:start + batch_size]]
            image = torch.from_numpy(np.stack([p[0] for p in patches]))[:, None]
            label = torch.from_numpy(np.stack([np.stack([p[1].astype(np.float32), p[2]]) for p in patches]))
            yield image, label
