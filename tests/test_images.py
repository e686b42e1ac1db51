"""Converting ordinary pictures into MNIST's form for `predict`."""

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lib.data import read_split
from mnist_lib.errors import UserError
from mnist_lib.images import to_mnist


def corr(a, b):
    return float(np.corrcoef(a.flatten().float().numpy(), b.flatten().float().numpy())[0, 1])


def test_mnist_digits_survive_a_round_trip(mnist_dir):
    images, _ = read_split("test", mnist_dir)
    for img in images[:20]:
        out = to_mnist(Image.fromarray(img.numpy()))
        assert out.shape == (28, 28) and out.dtype == torch.uint8
        assert corr(out, img) > 0.8


def test_dark_on_light_is_inverted_scaled_and_centred(mnist_dir):
    images, _ = read_split("test", mnist_dir)
    digit = images[0].numpy()
    photo = Image.new("L", (200, 150), 230)  # grey paper
    photo.paste(Image.fromarray(255 - digit).resize((90, 90)), (100, 50))  # dark ink, off-centre
    out = to_mnist(photo)
    assert out[0].sum() == 0 and out[:, 0].sum() == 0  # background black at the border
    ys, xs = torch.nonzero(out > 50, as_tuple=True)
    assert 18 <= int(ys.max() - ys.min()) + 1 <= 21  # fitted into the 20-pixel box
    assert corr(out, images[0]) > 0.7


def test_blank_image_is_refused():
    with pytest.raises(UserError, match="blank"):
        to_mnist(Image.new("L", (28, 28), 255))
