import torch

from etpicker.core import augment

N = 24


def _cube_batch(batch=6):
    """A bright 3-voxel cube labelled 1 off-centre in each patch, on a weak gradient background."""
    image = torch.linspace(0, 0.1, N).view(1, 1, 1, 1, N).repeat(batch, 1, N, N, 1)
    label = torch.zeros(batch, 2, N, N, N)
    image[:, :, 5:8, 14:17, 9:12] = 10.0
    label[:, 0, 5:8, 14:17, 9:12] = 1.0
    label[:, 1] = 1.0
    return image, label


def _check_aligned(image, label):
    for sample_image, sample_label in zip(image, label):
        ids = sample_label[0]
        assert ids.sum() >= 8, "the labelled cube must survive"
        brightest = sample_image[0].flatten().argmax()
        assert ids.flatten()[brightest] == 1, "the brightest voxel must stay labelled"
        assert sample_image[0][ids == 1].mean() > 5.0
        assert set(ids.unique().tolist()) <= {0.0, 1.0}, "labels stay integer"


def test_each_augmentation_keeps_image_and_label_aligned():
    generator = torch.Generator().manual_seed(0)
    for augmentation in (augment.RandomMirror(), augment.RandomRot90XY(),
                         augment.RandomAffineElastic(p=1.0), augment.default_augmentation()):
        image, label = _cube_batch()
        out_image, out_label = augmentation(image, label, generator)
        assert out_image.shape == image.shape and out_label.shape == label.shape
        _check_aligned(out_image, out_label)


def test_augmentation_changes_patches_and_repeats_with_the_same_seed():
    image, label = _cube_batch()
    first = augment.default_augmentation()(image, label, torch.Generator().manual_seed(3))
    second = augment.default_augmentation()(image, label, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    moved = [not torch.equal(first[1][b, 0], label[b, 0]) for b in range(len(image))]
    assert sum(moved) >= 3


def test_affine_without_change_is_exact():
    image, label = _cube_batch(2)
    out_image, out_label = augment.RandomAffineElastic(p=0.0)(image, label, torch.Generator().manual_seed(1))
    assert torch.allclose(out_image, image, atol=1e-5) and torch.equal(out_label, label)
