"""npe2 reader and writer: open case folders/files, save labels with the source geometry."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg._napari.layers import case_of_layer, case_to_layer_data
from napari_ssseg._napari.reader import get_reader, read_case_layers
from napari_ssseg._napari.writer import write_labels
from napari_ssseg.errors import SsegError
from napari_ssseg.io.readers import load_case, read_labels
from napari_ssseg.io.writers import write_case

GEOMETRY_NAMES = ["lps", "ras", "aniso", "las_aniso"]  # see conftest.GEOMETRIES


# ---------------------------------------------------------------------- get_reader (no GUI)
def test_get_reader_accepts_cases_and_images(case_folder, tmp_path):
    assert get_reader(str(case_folder)) is read_case_layers
    assert get_reader([str(case_folder)]) is read_case_layers
    assert get_reader(str(case_folder / "Tiny_001_flair.nii.gz")) is read_case_layers
    for ext in (".nii", ".nrrd", ".mha", ".mhd"):
        assert get_reader(str(tmp_path / f"x{ext}")) is read_case_layers


@pytest.mark.parametrize("kind", ["empty_dir", "text_file", "two_paths", "png"])
def test_get_reader_declines_other_paths(tmp_path, case_folder, kind):
    path = {
        "empty_dir": tmp_path / "empty",
        "text_file": tmp_path / "notes.txt",
        "two_paths": [str(case_folder), str(case_folder)],
        "png": tmp_path / "image.png",
    }[kind]
    if kind == "empty_dir":
        path.mkdir()
    elif kind in ("text_file", "png"):
        path.write_text("x")
    assert get_reader(path if isinstance(path, list) else str(path)) is None


def test_read_case_layers_folder(case_folder, tiny_case):
    data = read_case_layers(str(case_folder))
    assert [kw["name"] for _, kw, _ in data][-1] == "Tiny_001 labels"
    np.testing.assert_array_equal(data[-1][0], tiny_case.labels)
    np.testing.assert_allclose(data[0][1]["scale"], tiny_case.scale)


def test_read_plain_3d_file_as_one_image(tmp_path, tiny_case):
    image = sitk.GetImageFromArray(tiny_case.channel("t2"))
    image.SetSpacing((1.5, 1.5, 2.5))
    path = tmp_path / "scan.nrrd"
    sitk.WriteImage(image, str(path))
    data = read_case_layers(str(path))
    assert [(kw["name"], t) for _, kw, t in data] == [
        ("scan T1", "image"),
        ("scan labels", "labels"),
    ]
    np.testing.assert_allclose(data[0][1]["scale"], (2.5, 1.5, 1.5))


def test_reader_raises_clear_error_for_corrupt_file(case_folder):
    t1 = case_folder / "Tiny_001_t1.nii.gz"
    t1.write_bytes(gzip.compress(gzip.decompress(t1.read_bytes())[:500]))
    reader = get_reader(str(case_folder))
    assert reader is not None
    with pytest.raises(SsegError, match="Tiny_001_t1.nii.gz"):
        reader(str(case_folder))


# ---------------------------------------------------------------------- writer (no GUI)
def test_writer_without_case_uses_layer_scale_and_translate(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown.append)
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1, 2, 3] = 3
    out = tmp_path / "free.nii.gz"
    meta = {"name": "free", "scale": (3.0, 0.5, 0.75), "translate": (10.0, -4.0, 2.0)}
    assert write_labels(str(out), labels, meta) == [str(out)]
    image = sitk.ReadImage(str(out))
    np.testing.assert_allclose(image.GetSpacing(), (0.75, 0.5, 3.0))
    np.testing.assert_allclose(image.GetOrigin(), (2.0, -4.0, 10.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), labels)
    assert shown and "not linked to a case" in shown[0]


def test_writer_refuses_wrong_shape_and_values(tmp_path, tiny_case):
    *_, (labels, kw, _) = case_to_layer_data(tiny_case)
    with pytest.raises(SsegError, match="shape"):
        write_labels(str(tmp_path / "a.nii.gz"), labels[:-1], kw)
    bad = labels.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(SsegError, match="7"):
        write_labels(str(tmp_path / "b.nii.gz"), bad, kw)
    assert not list(tmp_path.iterdir()), "nothing is written on error"


# ---------------------------------------------------------------------- GUI round trips
@pytest.mark.gui
def test_open_folder_with_plugin(make_napari_viewer, case_folder, tiny_case):
    viewer = make_napari_viewer()
    layers = viewer.open(str(case_folder), plugin="napari-ssseg")
    assert len(layers) == 5
    assert viewer.layers[-1].name == "Tiny_001 labels"
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, tiny_case.scale, atol=1e-6)
        np.testing.assert_allclose(layer.translate, tiny_case.translate, atol=1e-4)
    assert case_of_layer(viewer.layers[0]) is case_of_layer(viewer.layers[-1])


@pytest.mark.gui
@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
@pytest.mark.parametrize("suffix", [".nii.gz"])
def test_paint_save_reload_same_voxel_and_world(
    make_napari_viewer, make_geo_case, tmp_path, geometry, suffix
):
    """Paint one voxel, save through the writer: same voxel and world position on reload."""
    folder = write_case(make_geo_case(geometry), tmp_path / "in", naming="brats2023", name="G")
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-ssseg")
    layer = viewer.layers["G labels"]
    case = case_of_layer(layer)
    zyx = (3, 31, 7)  # outside the tumour, off-centre on every axis
    assert layer.data[zyx] == 0
    layer.data_setitem(tuple(np.array([v]) for v in zyx), 2)
    expected = layer.data.copy()
    assert expected[zyx] == 2

    out = tmp_path / f"painted{suffix}"
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-ssseg")
    assert [str(p) for p in written] == [str(out)]

    # 1. the package reader: same canonical voxels
    np.testing.assert_array_equal(read_labels(out, case), expected)
    # 2. reloaded in napari from disk: the painted voxel is at the same world position
    reloaded = load_case(folder, seg=out)
    np.testing.assert_array_equal(reloaded.labels, expected)
    world_lps_zyx = layer.data_to_world(zyx)
    np.testing.assert_allclose(
        world_lps_zyx, case.canonical_geometry.index_to_world(np.array(zyx))[::-1], atol=1e-5
    )
    # (in a second viewer: in the first one the case is open, so its FLAIR layer is reused)
    (layer2,) = [
        layer
        for layer in make_napari_viewer().open(str(folder / "G-t2f.nii.gz"), plugin="napari-ssseg")
        if "FLAIR" in layer.name
    ]
    np.testing.assert_allclose(layer2.data_to_world(zyx), world_lps_zyx, atol=1e-5)
    # 3. nibabel: the one file voxel that changed maps (NIfTI RAS affine) to the same place
    img = nib.load(str(out))
    original = np.asarray(nib.load(str(folder / "G-seg.nii.gz")).dataobj)
    (ijk,) = np.argwhere(np.asarray(img.dataobj) != original)
    assert np.asarray(img.dataobj)[tuple(ijk)] == 2
    world_ras = img.affine @ np.r_[ijk, 1.0]
    world_lps_xyz = world_ras[:3] * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(world_lps_xyz[::-1], world_lps_zyx, atol=1e-4)
    np.testing.assert_allclose(img.affine, case.geometry.affine_ras(), atol=1e-5)
    # 4. SimpleITK: same grid as the source FLAIR
    src = sitk.ReadImage(str(folder / "G-t2f.nii.gz"))
    dst = sitk.ReadImage(str(out))
    np.testing.assert_allclose(dst.GetSpacing(), src.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(dst.GetOrigin(), src.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(dst.GetDirection(), src.GetDirection(), atol=1e-6)


@pytest.mark.gui
@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha"])
def test_writer_formats_keep_convention(make_napari_viewer, case_folder, tmp_path, suffix):
    viewer = make_napari_viewer()
    viewer.open(str(case_folder), plugin="napari-ssseg")
    layer = viewer.layers["Tiny_001 labels"]
    out = tmp_path / f"labels{suffix}"
    viewer.layers.selection = {layer}
    viewer.layers.save(str(out), selected=True, plugin="napari-ssseg")
    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))
    assert 4 in values and 3 not in values  # BraTS 2021 convention: ET saved as 4
    np.testing.assert_array_equal(read_labels(out, case_of_layer(layer)), layer.data)


@pytest.mark.gui
def test_open_corrupt_folder_raises_message_and_keeps_layers(make_napari_viewer, case_folder):
    viewer = make_napari_viewer()
    viewer.open(str(case_folder), plugin="napari-ssseg")
    names = [layer.name for layer in viewer.layers]
    flair = case_folder / "Tiny_001_flair.nii.gz"
    flair.write_bytes(gzip.compress(gzip.decompress(flair.read_bytes())[:1000]))
    with pytest.raises(Exception) as info:
        viewer.open(str(case_folder), plugin="napari-ssseg")
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("Tiny_001_flair.nii.gz" in text and "truncated" in text for text in chain), chain
    assert [layer.name for layer in viewer.layers] == names


@pytest.mark.gui
def test_invalid_label_value_reaches_the_user(make_napari_viewer, tiny_case, tmp_path, monkeypatch):
    """A refused save must say why (napari used to show only 'not a valid writer')."""
    from napari.layers import Layer

    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg._napari.writer import LabelsNotWrittenError

    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda m: shown.append(m))
    viewer = make_napari_viewer()
    for x in case_to_layer_data(tiny_case):
        viewer.add_layer(Layer.create(*x))
    labels = next(lyr for lyr in viewer.layers if lyr._type_string == "labels")
    labels.data[0, 0, 0] = 7
    viewer.layers.selection = {labels}
    out = tmp_path / "bad.nii.gz"
    with pytest.raises(LabelsNotWrittenError, match="7"):
        viewer.layers.save(str(out), selected=True, plugin="napari-ssseg")
    assert shown and "7" in shown[0] and "not saved" in shown[0]
    assert not out.exists()
