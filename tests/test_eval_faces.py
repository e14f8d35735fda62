"""Cur.: IR-101 loads a state dict with the public checkpoint's names and shapes (TFace `model_irse`), matches a
PyTorch module of that definition, and the offline face pipeline finds and aligns a real face."""

import jax
import numpy as np
import pytest

from fc_jax.convert.common import _flatten
from fc_jax.convert.iresnet import convert_checkpoint, rules
from fc_jax.models.iresnet import IResNet, IResNetConfig, iresnet_target_shapes

torch = pytest.importorskip("torch")
nn = torch.nn


class _TorchBlock(nn.Module):
    """TFace BasicBlockIR, written from its definition."""

    def __init__(self, cin, depth, stride):
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if cin == depth else
                               nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
                                       nn.BatchNorm2d(depth), nn.PReLU(depth),
                                       nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class _TorchBackbone(nn.Module):
    """TFace Backbone(112, num_layers, 'ir') with configurable stage sizes and widths."""

    def __init__(self, units=(3, 13, 30, 3), widths=(64, 128, 256, 512), emb=512):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                         nn.PReLU(widths[0]))
        blocks, cin = [], widths[0]
        for n, w in zip(units, widths):
            blocks += [_TorchBlock(cin, w, 2)] + [_TorchBlock(w, w, 1) for _ in range(n - 1)]
            cin = w
        self.body = nn.Sequential(*blocks)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.Dropout(0.4), nn.Flatten(),
                                          nn.Linear(widths[-1] * 7 * 7, emb), nn.BatchNorm1d(emb, affine=False))

    def forward(self, x):
        return self.output_layer(self.body(self.input_layer(x)))


def test_rules_cover_the_public_ir101_state_dict():
    """Every tensor of the real IR-101 state dict (built on the meta device: names and shapes only) is used, and
    each lands on a leaf of our tree with the right shape after its layout change."""
    with torch.device("meta"):
        sd = _TorchBackbone().state_dict()
    keys = {k for k in sd if not k.endswith("num_batches_tracked")}
    # input conv + BN (4 tensors + num_batches_tracked) + PReLU; 49 units of BN, conv, BN, PReLU, conv, BN; 3 conv +
    # BN shortcuts; output BN2d, Linear, BN1d without affine.
    assert len(sd) == (1 + 5 + 1) + 49 * (5 + 1 + 5 + 1 + 1 + 5) + 3 * (1 + 5) + (5 + 2 + 3) == 917
    config = IResNetConfig()
    targets = _flatten(iresnet_target_shapes(config))
    r = rules(config)
    assert {rule.source for rule in r} == keys
    assert {rule.target for rule in r} == set(targets)
    for rule in r:
        shape = tuple(sd[rule.source].shape)
        assert rule.transform(np.zeros(shape, np.float32)).shape == targets[rule.target].shape, rule.source


def test_parity_with_torch_definition(tmp_path):
    torch.manual_seed(0)
    units, widths = (1, 2, 1, 1), (8, 16, 16, 32)
    model = _TorchBackbone(units, widths, emb=24).eval()
    with torch.no_grad():  # non-trivial BN statistics and PReLU slopes
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.4)
    torch.save(model.state_dict(), tmp_path / "backbone.bin")
    config = IResNetConfig(stage_units=units, widths=widths, embedding_size=24)
    params = convert_checkpoint(str(tmp_path / "backbone.bin"), config)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ours = np.asarray(jax.jit(IResNet(config).apply)({"params": params}, x))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ---------------------------------------------------------------------------------------------------------------
# The face pipeline on real photographs shipped with scikit-image.


@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("dlib")
    pytest.importorskip("cv2")
    from fc_jax.eval.faces import FaceAligner, default_landmark_model

    if default_landmark_model() is None:
        pytest.skip("face_recognition_models (dlib landmark model) not installed")
    return FaceAligner()


def _astronaut():
    return pytest.importorskip("skimage.data").astronaut()


def _other_face():
    """LFW face #0 of scikit-image's lfw_subset, upscaled and framed so the detector sees some context."""
    import cv2

    face = (pytest.importorskip("skimage.data").lfw_subset()[0] * 255).astype(np.uint8)
    face = cv2.copyMakeBorder(cv2.resize(face, (150, 150), interpolation=cv2.INTER_CUBIC), 60, 60, 60, 60,
                              cv2.BORDER_REPLICATE)
    return np.repeat(face[..., None], 3, axis=2)


def test_finds_and_aligns_the_astronauts_face(aligner):
    from fc_jax.eval.faces import ARCFACE_TEMPLATE, umeyama

    img = _astronaut()
    face = aligner.detect(img)
    assert face is not None
    left, top, right, bottom = face.box
    assert 160 < left < 200 and 60 < top < 100 and 250 < right < 290 and 150 < bottom < 190  # her face, not the flag
    eyes, mouth = face.landmarks[:2], face.landmarks[3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[:, 1].min() > eyes[:, 1].max()  # image-left eye first; mouth below
    # The similarity transform puts the landmarks onto the ArcFace template (x2 for the 224 crop): eyes and nose
    # within 10 px of 224, the corners of her smile a little wider.
    m = umeyama(face.landmarks, ARCFACE_TEMPLATE * 2)
    mapped = face.landmarks @ m[:, :2].T + m[:, 2]
    err = np.abs(mapped - ARCFACE_TEMPLATE * 2)
    assert err[:3].max() < 10 and err.max() < 12
    crop = aligner.align(img)
    assert crop.shape == (112, 112, 3) and crop.min() >= -1 and crop.max() <= 1
    assert aligner.detect(np.full((200, 200, 3), 90, np.uint8)) is None


def test_umeyama_recovers_a_similarity():
    from fc_jax.eval.faces import umeyama

    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = umeyama(src, src @ (scale * rot).T + shift)
    np.testing.assert_allclose(m, np.c_[scale * rot, shift], atol=1e-9)


def test_cur_metric_self_one_other_lower_none_zero(aligner, tmp_path):
    from PIL import Image

    from fc_jax.eval.bench import Sample
    from fc_jax.eval.metrics.identity import FaceIdentity
    from fc_jax.video import Video

    config = IResNetConfig(stage_units=(1, 1, 1, 1), widths=(8, 16, 16, 32), embedding_size=32)
    rng = np.random.default_rng(0)  # random weights drawn in numpy: no compiled init
    params = jax.tree_util.tree_map(  # vectors (BN statistics and affine, PReLU slopes) in [0.5, 1.5]
        lambda s: (rng.uniform(0.5, 1.5, s.shape) if len(s.shape) == 1 else rng.normal(0, 0.2, s.shape)).astype(np.float32),
        iresnet_target_shapes(config))
    metric = FaceIdentity(params, "random tiny IR", aligner, frames=4, config=config)
    Image.fromarray(_astronaut()).save(tmp_path / "ref.png")
    sample = Sample("0000", str(tmp_path / "ref.png"), str(tmp_path / "ref.png"), "")
    same = metric(sample, Video("same", np.stack([_astronaut()] * 6), 24.0))
    other = metric(sample, Video("other", np.stack([_other_face()] * 6), 24.0))
    assert same.values["cur"] == pytest.approx(1.0, abs=1e-5)
    assert other.values["cur"] < same.values["cur"] - 1e-3
    assert other.info["frames_with_face"] == 4
    blank = metric(sample, Video("blank", np.full((6, 120, 120, 3), 90, np.uint8), 24.0))
    assert blank.values["cur"] == 0.0 and blank.info["frames_with_face"] == 0
    from fc_jax.video import VideoError

    with pytest.raises(VideoError, match="need at least 4 frames, the video has 2"):
        metric(sample, Video("short", np.stack([_astronaut()] * 2), 24.0))
