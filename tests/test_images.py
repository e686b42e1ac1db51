"""Converting ordinary pictures into MNIST's form for `predict`."""

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import read_split
from mnist_lib.data.images import to_mnist


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


# --- hostile and unusual files ---------------------------------------------------------------


def write_png(path, width, height):
    """A real, valid grayscale PNG of width x height black pixels, streamed row by row (a 20000 x 20000 one is ~400 KB)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [8000, 10000, 20000])  # over our limit; over PIL's warning; over PIL's own error
def test_decompression_bomb_is_refused_from_the_header(tmp_path, side):
    from mnist_lib.data.images import load_digit

    path = write_png(tmp_path / "big.png", side, side)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(UserError, match=r"big\.png: .*megapixels"):
        load_digit(path)


def stroke_image(mode_fill, size=(200, 200)):
    """A vertical bar (a '1') drawn with `mode_fill` = (mode, stroke colour, background colour)."""
    from PIL import ImageDraw

    mode, ink, paper = mode_fill
    img = Image.new(mode, size, paper)
    ImageDraw.Draw(img).rectangle([92, 30, 108, 170], fill=ink)
    return img


def assert_is_a_centred_bar(out):
    ys, xs = torch.nonzero(out > 100, as_tuple=True)
    assert 19 <= int(ys.max() - ys.min()) + 1 <= 21  # 20 pixels tall
    assert int(xs.max() - xs.min()) + 1 <= 5  # thin
    assert abs(float(xs.float().mean()) - 13.5) <= 1.0 and abs(float(ys.float().mean()) - 13.5) <= 1.0


@pytest.mark.parametrize(
    "mode_fill",
    [
        ("RGBA", (0, 0, 0, 255), (0, 0, 0, 0)),  # black strokes on transparent black: a drawing app's export
        ("RGBA", (0, 0, 0, 255), (255, 255, 255, 0)),  # on transparent white
        ("RGBA", (255, 255, 255, 255), (0, 0, 0, 0)),  # white strokes on transparent
        ("LA", (0, 255), (0, 0)),
        ("RGBA", (200, 30, 30, 255), (255, 255, 255, 0)),  # coloured ink
    ],
    ids=["black-on-clear-black", "black-on-clear-white", "white-on-clear", "LA", "red-on-clear"],
)
def test_strokes_on_a_transparent_background_are_found(mode_fill):
    assert_is_a_centred_bar(to_mnist(stroke_image(mode_fill)))


def test_palette_image_with_a_transparent_index(tmp_path):
    from mnist_lib.data.images import load_digit

    img = stroke_image(("P", 1, 0))
    img.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # index 0 and 1 both black; 0 is transparent
    img.save(tmp_path / "p.png", transparency=0)
    assert_is_a_centred_bar(load_digit(tmp_path / "p.png"))


def test_sixteen_bit_and_float_images_keep_their_contrast(tmp_path):
    from mnist_lib.data.images import load_digit

    bar16 = np.full((200, 200), 60000, dtype=np.uint16)  # light paper, 16 bits
    bar16[30:171, 92:109] = 3000  # dark ink
    Image.fromarray(bar16).save(tmp_path / "d16.png")
    assert Image.open(tmp_path / "d16.png").mode.startswith("I;16")
    assert_is_a_centred_bar(load_digit(tmp_path / "d16.png"))
    f = np.zeros((200, 200), dtype=np.float32)
    f[30:171, 92:109] = 1e6  # a float image with an unknown range
    f[0, 0] = np.nan
    assert_is_a_centred_bar(to_mnist(Image.fromarray(f, mode="F")))


def test_large_photo_is_scaled_down_and_still_read():
    from PIL import ImageDraw

    img = Image.new("L", (3000, 2000), 255)  # a 6-megapixel photo of a bar, 3 pixels wider than WORK_SIDE allows
    ImageDraw.Draw(img).rectangle([1400, 300, 1560, 1700], fill=0)
    assert_is_a_centred_bar(to_mnist(img))


@pytest.mark.parametrize(
    "content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a\x01\x00\x01\x00"], ids=["empty", "png-header", "gif"]
)
def test_truncated_or_empty_files_are_one_user_error(tmp_path, content):
    from mnist_lib.data.images import load_digit

    (tmp_path / "x.img").write_bytes(content)
    with pytest.raises(UserError, match=r"x\.img"):
        load_digit(tmp_path / "x.img")
