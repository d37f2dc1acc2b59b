"""Binary image inputs (OVMS rules and tensord's opt-ins), checked against Pillow's decode."""

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from conftest import Daemon
from model_builders import write_safetensors_cnn
from test_models import resnet_reference

RNG = np.random.default_rng(99)
CNN = {}


def encode(array, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def smooth(h, w):
    """A photo-like RGB image (JPEG-friendly gradients plus a little noise)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + RNG.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def pillow_bgr(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]


def bilinear(img, h, w):
    """OpenCV INTER_LINEAR geometry, in float64."""
    sh, sw = img.shape[:2]

    def axis(dst, src):
        f = np.maximum((np.arange(dst) + 0.5) * src / dst - 0.5, 0)
        i0 = np.minimum(np.floor(f).astype(int), src - 1)
        return i0, np.minimum(i0 + 1, src - 1), f - i0

    y0, y1, fy = axis(h, sh)
    x0, x1, fx = axis(w, sw)
    img = img.astype(np.float64)
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * fx[None, :, None]
    bot = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * fx[None, :, None]
    return top + (bot - top) * fy[:, None, None]


def probe_model(repo, name, datatype, dims, layout="NHWC", image=""):
    (repo / name).mkdir()
    spec = f'datatype = "{datatype}"\ndims = {dims}\nlayout = "{layout}"\n'
    (repo / name / "config.toml").write_text(
        'backend = "builtin"\nbuiltin = "identity"\n'
        f'[[input]]\nname = "IMAGE"\n{spec}{image}'
        f'[[output]]\nname = "OUTPUT0"\n{spec}'
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("images")
    (repo / "image_probe").mkdir()
    (repo / "image_probe" / "config.toml").write_text('backend = "builtin"\n')
    probe_model(repo, "resize_fp32", "FP32", [-1, 16, 20, 3])
    probe_model(repo, "nchw_fp32", "FP32", [-1, 3, -1, -1], layout="NCHW")
    probe_model(repo, "pair_u8", "UINT8", [2, -1, -1, 3])
    probe_model(repo, "gray_u16", "UINT16", [-1, -1, -1, 1])
    probe_model(repo, "int8", "INT8", [-1, -1, -1, 3])
    probe_model(repo, "rgb_norm", "FP32", [-1, -1, -1, 3],
                image='[input.image]\ncolor = "rgb"\nscale = 0.00392156862745098\n'
                      'mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n')
    probe_model(repo, "convert", "UINT8", [-1, -1, -1, 3], image='[input.image]\nconvert_channels = true\n')
    probe_model(repo, "letterbox", "FP32", [-1, 8, 8, 3], image='[input.image]\nresize = "letterbox"\n')
    probe_model(repo, "crop", "FP32", [-1, 8, 8, 3], image='[input.image]\nresize = "center_crop"\n')
    probe_model(repo, "letterbox_norm", "FP32", [-1, 8, 8, 3],
                image='[input.image]\nresize = "letterbox"\npad = 114\nscale = 0.00392156862745098\n'
                      'mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n')
    probe_model(repo, "exif", "UINT8", [-1, -1, -1, 3], image='[input.image]\nexif_orientation = true\n')
    probe_model(repo, "ranged", "FP32", '[-1, "8:16", "8:16", 3]')
    CNN.update(write_safetensors_cnn(RNG, repo, "cnn", [4, 8], 5))
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


def send(client, model, images, binary=True, name="IMAGE"):
    """As OVMS's KServe samples do: np.array([bytes, ...], dtype=object) as BYTES."""
    inp = httpclient.InferInput(name, [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    return client.infer(model, [inp]).as_numpy("OUTPUT0")


def refused(server, model, images):
    body = b"".join(len(i).to_bytes(4, "little") + i for i in images)
    header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [len(images)], "datatype": "BYTES",
                                      "parameters": {"binary_data_size": len(body)}}]}).encode()
    req = urllib.request.Request(f"http://{server.url}/v2/models/{model}/infer", data=header + body,
                                 headers={"Inference-Header-Content-Length": str(len(header))})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400
    return json.load(e.value)["error"]


@pytest.mark.parametrize("mode", ["RGB", "P", "RGBA-converted", "L-converted"])
def test_png_is_bit_exact_with_pillow_in_bgr(client, mode):
    rgb = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode == "P":
        image = image.quantize(colors=17)
    elif mode == "RGBA-converted":
        image = image.convert("RGBA")
    elif mode == "L-converted":
        image = image.convert("L")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    model = "convert" if mode.endswith("converted") else "image_probe"
    got = send(client, model, [buf.getvalue()])
    assert got.shape == (1, 9, 13, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], pillow_bgr(buf.getvalue()))


def test_sixteen_bit_png_keeps_its_values(client):
    gray = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    data = encode(gray, "PNG")
    got = send(client, "gray_u16", [data])
    assert got.shape == (1, 6, 5, 1) and got.dtype == np.uint16
    np.testing.assert_array_equal(got[0, :, :, 0], gray)


@pytest.mark.parametrize("size", [(48, 64), (224, 224), (97, 131)])
def test_jpeg_within_two_of_pillow(client, size):
    data = encode(smooth(*size), "JPEG", quality=90)
    got = send(client, "image_probe", [data])
    assert got.shape == (1, *size, 3)
    assert np.abs(got[0].astype(int) - pillow_bgr(data).astype(int)).mean() < 2


def test_resize_matches_reference_bilinear(client):
    src = RNG.integers(0, 256, (29, 37, 3), dtype=np.uint8)
    got = send(client, "resize_fp32", [encode(src, "PNG")])
    assert got.shape == (1, 16, 20, 3)
    np.testing.assert_allclose(got[0], bilinear(src[:, :, ::-1], 16, 20), atol=1e-3)


def test_nchw_layout_and_datatype_conversion(client):
    src = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    png = encode(src, "PNG")
    got = send(client, "nchw_fp32", [png])
    assert got.shape == (1, 3, 5, 6)
    np.testing.assert_array_equal(got[0], src[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    saturated = send(client, "int8", [png])
    np.testing.assert_array_equal(saturated[0], np.minimum(src[:, :, ::-1], 127).astype(np.int8))


def test_batches_of_images(client):
    srcs = [RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(3)]
    got = send(client, "image_probe", [encode(s, "PNG") for s in srcs])
    assert got.shape == (3, 4, 6, 3)
    for g, s in zip(got, srcs):
        np.testing.assert_array_equal(g, s[:, :, ::-1])
    pair = send(client, "pair_u8", [encode(s, "PNG") for s in srcs[:2]])
    assert pair.shape == (2, 4, 6, 3)


def test_errors_name_the_image(server):
    good = encode(RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8), "PNG")
    jpeg = encode(smooth(32, 32), "JPEG")
    rgba = encode(RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8), "PNG")
    cases = [
        ("image_probe", [good, b"\xff\xd8\xff\xe0garbage"], "image 1: corrupt or truncated JPEG"),
        ("image_probe", [jpeg[: len(jpeg) // 3]], "image 0: corrupt or truncated JPEG"),
        ("image_probe", [good, good, b"GIF89a...."], "image 2: unsupported image format"),
        ("image_probe", [rgba], "image 0: has 4 channels, the model input takes 3"),
        ("image_probe", [good, encode(np.zeros((5, 4, 3), np.uint8), "PNG")], "image 1 is 4x5 but image 0 is 4x4"),
        ("pair_u8", [good, good, good], "3 images for a model batch of 2"),
        ("image_probe", [b""], "image 0: empty image data"),
    ]
    for model, images, message in cases:
        error = refused(server, model, images)
        assert message in error, error
    # The daemon is unharmed.
    assert urllib.request.urlopen(f"http://{server.url}/v2/health/live").status == 200


def test_rgb_order_and_normalisation(client):
    src = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    got = send(client, "rgb_norm", [encode(src, "PNG")])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got[0], (src / 255.0 - mean) / std, atol=1e-5)


def test_letterbox_and_center_crop(client):
    wide = RNG.integers(0, 256, (4, 16, 3), dtype=np.uint8)
    boxed = send(client, "letterbox", [encode(wide, "PNG")])[0]
    assert np.all(boxed[:3] == 0) and np.all(boxed[5:] == 0), "padding above and below"
    np.testing.assert_allclose(boxed[3:5], bilinear(wide[:, :, ::-1], 2, 8), atol=1e-3)
    cropped = send(client, "crop", [encode(wide, "PNG")])[0]
    np.testing.assert_allclose(cropped, bilinear(wide[:, :, ::-1], 8, 32)[:, 12:20], atol=1e-3)
    # The padding is a pixel value (`pad`), normalised like every pixel.
    normed = send(client, "letterbox_norm", [encode(wide, "PNG")])[0]
    np.testing.assert_allclose(normed[:3], (114 / 255 - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_allclose(normed[3:5], (bilinear(wide[:, :, ::-1], 2, 8) / 255 - 0.5) / 0.25, atol=1e-4)


def test_range_dimensions_clamp_to_the_nearer_bound(client):
    src = RNG.integers(0, 256, (4, 20, 3), dtype=np.uint8)
    got = send(client, "ranged", [encode(src, "PNG")])
    assert got.shape == (1, 8, 16, 3), "height 4 rises to 8, width 20 falls to 16"
    np.testing.assert_allclose(got[0], bilinear(src[:, :, ::-1], 8, 16), atol=1e-3)
    inside = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(send(client, "ranged", [encode(inside, "PNG")])[0], inside[:, :, ::-1])
    assert client.get_model_metadata("ranged")["inputs"][0]["shape"] == [-1, -1, -1, 3]
    tensor = httpclient.InferInput("IMAGE", [1, 20, 20, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 20, 20, 3), np.float32))
    with pytest.raises(Exception, match=r"the model expects \[-1, 8:16, 8:16, 3\]"):
        client.infer("ranged", [tensor])


def test_exif_orientation(client):
    src = smooth(16, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    Image.fromarray(src).save(buf, format="JPEG", quality=95, exif=exif)
    upright = send(client, "exif", [buf.getvalue()])
    assert upright.shape == (1, 32, 16, 3)
    rotated = np.rot90(pillow_bgr(buf.getvalue()), k=-1)
    assert np.abs(upright[0].astype(int) - rotated.astype(int)).mean() < 1
    assert send(client, "image_probe", [buf.getvalue()]).shape == (1, 16, 32, 3), "off by default (OVMS)"


def test_jpeg_to_class_scores_end_to_end(client):
    src = smooth(24, 24)
    data = encode(src, "JPEG", quality=95)
    inp = httpclient.InferInput("INPUT0", [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=np.object_))
    scores = client.infer("cnn", [inp]).as_numpy("OUTPUT0")
    x = pillow_bgr(data).transpose(2, 0, 1)[None].astype(np.float64)
    ref = resnet_reference(x, CNN, [4, 8])
    assert scores.shape == (1, 5)
    # JPEG decoders differ by a little per pixel; the scores follow within a small margin.
    assert np.abs(scores - ref).max() <= 0.02 * np.abs(ref).max() + 0.05


def png_bomb(side, bit_depth=8):
    """A valid grayscale PNG of side × side zeros: under a megabyte on the wire, gigabytes decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + side * bit_depth // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_decompression_bomb_is_refused_from_its_header(server):
    bomb = png_bomb(16384)
    assert len(bomb) < 1_000_000
    before = peak_rss_kb(server.proc.pid)
    import time
    started = time.monotonic()
    error = refused(server, "resize_fp32", [bomb])
    assert time.monotonic() - started < 1.0
    assert error == ("input 'IMAGE': image 0 is 16384x16384, 268435456 pixels: over the limit of 67108864 "
                     "pixels per image (--max-image-pixels)"), error
    # Several images within the per-image limit still may not add up past the request's.
    error = refused(server, "image_probe", [png_bomb(8192)] * 3)
    assert "images 0 to 2 have 201326592 pixels together: over the limit of 134217728" in error, error
    assert peak_rss_kb(server.proc.pid) - before < 256 * 1024
    assert urllib.request.urlopen(f"http://{server.url}/v2/health/live").status == 200


def test_a_near_size_image_is_resized_without_a_full_size_float_copy(tmp_path):
    """A 2048x2048 RGB image into a fixed 1024x1024 UINT8 input: the decoded samples (12 MiB),
    the output's f32 plane (12 MiB) and the tensor (3 MiB), but no 48 MiB f32 copy of the
    image before the resize."""
    probe_model(tmp_path, "near", "UINT8", [-1, 1024, 1024, 3])
    png = encode(smooth(2048, 2048), "PNG", compress_level=1)
    d = Daemon("--threads", "1", "--max-body-bytes", str(64 << 20), repo=tmp_path)
    try:
        client = httpclient.InferenceServerClient(d.url, network_timeout=60)
        before = peak_rss_kb(d.proc.pid)
        got = send(client, "near", [png])
        grown = (peak_rss_kb(d.proc.pid) - before) // 1024
        assert got.shape == (1, 1024, 1024, 3)
        # The body, the decoded image, the output plane and the tensor, with allocator slack.
        assert grown < len(png) // (1 << 20) + 12 + 12 + 3 + 8, f"peak RSS grew {grown} MiB"
    finally:
        d.stop()
