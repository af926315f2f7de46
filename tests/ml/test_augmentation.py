"""Strong augmentation and modality dropout of the crop sampler, and their training record."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_ssseg.errors import InputError  # noqa: E402
from napari_ssseg.ml.data import CropSampler, PreparedCase, drop_modalities  # noqa: E402


def _prepared(tmp_path, n=2):
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.preprocess import preprocess

    cases = []
    for i in range(n):
        ph = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=i)
        pre = preprocess(ph.images)
        img = tmp_path / f"c{i}_image.npy"
        lab = tmp_path / f"c{i}_label.npy"
        np.save(img, pre.images.astype(np.float32))
        np.save(lab, ph.labels[pre.bbox].astype(np.uint8))
        cases.append(
            PreparedCase(name=f"c{i}", image=str(img), label=str(lab), shape=pre.images.shape[1:])
        )
    return cases


def test_drop_modalities_never_drops_every_channel():
    rs = np.random.RandomState(0)
    x = torch.ones((4, 4, 4, 4))
    counts = []
    for _ in range(300):
        y = drop_modalities(x, rs, 1.0)
        zero = [bool((y[c] == 0).all()) for c in range(4)]
        counts.append(sum(zero))
        kept = [c for c in range(4) if not zero[c]]
        assert all(bool((y[c] == 1).all()) for c in kept)
    assert min(counts) == 1 and max(counts) == 3  # 1 to C-1 channels, never all
    assert x.min() == 1  # the input is not modified
    assert drop_modalities(x, rs, 0.0) is x
    one = torch.ones((1, 4, 4, 4))
    assert drop_modalities(one, rs, 1.0) is one


def test_sampler_dropout_rate_and_strong_augmentation_are_seeded(tmp_path):
    cases = _prepared(tmp_path)
    s = CropSampler((16, 16, 16), augmentation="strong", modality_dropout=0.5)
    a = s.sample(cases, [0, 1, 0, 1], seed=5)
    b = s.sample(cases, [0, 1, 0, 1], seed=5)
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["label"], b["label"])
    dropped = 0
    n = 0
    for seed in range(20):
        batch = s.sample(cases, [0, 1], seed=seed)
        img = batch["image"]
        assert torch.isfinite(img).all()
        for k in range(img.shape[0]):
            zero = [(img[k, c] == 0).all().item() for c in range(img.shape[1])]
            assert not all(zero)
            dropped += any(zero)
            n += 1
    assert 0.25 < dropped / n < 0.75  # about half of the crops lose channels
    plain = CropSampler((16, 16, 16)).sample(cases, [0, 1], seed=5)
    assert not torch.equal(plain["image"], a["image"][:2])


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"augmentation": "heavy"}, "augmentation"), ({"modality_dropout": 1.5}, "modality_dropout")],
)
def test_sampler_bad_options(kw, match):
    with pytest.raises(InputError, match=match):
        CropSampler((16, 16, 16), **kw)


def test_training_records_dropout_and_inference_uses_it(tmp_path):
    from test_train import tiny_config, write_phantoms

    from napari_ssseg.ml.checkpoint import load_checkpoint
    from napari_ssseg.ml.inference import predict_case
    from napari_ssseg.ml.train import train

    data = write_phantoms(tmp_path / "data", n_labelled=2, n_unlabelled=0)
    with pytest.raises(InputError, match="modality_dropout"):
        train(tiny_config(data, tmp_path / "bad", modality_dropout=2.0))
    with pytest.raises(InputError, match="augmentation"):
        train(tiny_config(data, tmp_path / "bad", augmentation="x"))
    res = train(
        tiny_config(data, tmp_path / "run", augmentation="strong", modality_dropout=0.3, epochs=1)
    )
    assert res["status"] == "done"
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck.provenance["modality_dropout"] == 0.3
    assert ck.provenance["augmentation"] == "strong"
    from napari_ssseg.core.phantom import make_phantom

    case = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=9).to_case(name="x")
    with pytest.warns(UserWarning, match="has no t2"):
        out = predict_case(
            case.images[[0, 1, 3]],
            ck,
            device="cpu",
            modalities=["t1", "t1ce", "flair"],
            spacing=(2.0, 2.0, 2.0),
        )
    assert out["info"]["missing_modalities"] == ["t2"]
