"""npe2 reader: open a brain MRI case folder or image file in napari.

Handled paths
-------------
* a folder holding a case in BraTS 2019-2021 (``*_t1``, ``*_t1ce``, ``*_t2``, ``*_flair``,
  optional ``*_seg``), BraTS 2023+ (``*-t1n``, ``*-t1c``, ``*-t2w``, ``*-t2f``, ``*-seg``) or
  MSD Task01 naming, or a DICOM series folder (anything :func:`napari_ssseg.io.readers.
  find_case_files` recognises);
* a single ``.nii``, ``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` file: a BraTS-named
  modality file, an MSD 4D image, or any other 3D volume (shown as a single image, which the
  plugin treats as its ``t1`` channel).

Anything else (a folder without image files, another extension, several paths) gets ``None``
so that napari asks another plugin. :func:`get_reader` only looks at names; the reading and
all validation happen in the returned function, whose :class:`~napari_ssseg.errors.SsegError`
napari shows as a notification (nothing already in the viewer is touched).

Opening a case already open in the current viewer does not stack a second layer set: the
open layers are reused as the Loader panel does (:func:`napari_ssseg._napari.layers.
iter_show_case`; an edited labels layer is kept as it is) and the reader returns napari's
"nothing to add" sentinel ``[(None,)]``. A case lacking some of T1, T1Gd, T2 and FLAIR shows
a warning naming them and the proposal regions that will be weaker. The current viewer also
gets radiological 2D views and orientation letters (:mod:`napari_ssseg._napari.orientation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_ssseg.io.naming import is_image_file, match_modality

__all__ = ["get_reader", "read_case_layers"]

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
LayerData = list[tuple[Any, dict[str, Any], str]]


def _single_path(path: PathOrPaths) -> Path | None:
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    paths = list(path)
    if len(paths) == 1:
        return Path(paths[0])
    return None


def _folder_has_images(folder: Path) -> bool:
    """True if ``folder`` (or one level below it) holds image files or a DICOM series."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    for entry in entries:
        if is_image_file(entry.name) or entry.name.lower().endswith(".dcm"):
            return True
    # MSD layout (imagesTr/labelsTr) or a case folder with per-modality DICOM subfolders
    for entry in entries:
        if entry.is_dir():
            try:
                if any(
                    is_image_file(e.name) or e.name.lower().endswith(".dcm")
                    for e in entry.iterdir()
                ):
                    return True
            except OSError:
                continue
    return False


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], LayerData] | None:
    """Return :func:`read_case_layers` if ``path`` looks like a case this plugin reads.

    Parameters
    ----------
    path : str or list of str
        What napari was asked to open.

    Returns
    -------
    callable or None
    """
    p = _single_path(path)
    if p is None:
        return None
    if p.is_dir():
        return read_case_layers if _folder_has_images(p) else None
    if is_image_file(p.name):
        return read_case_layers
    return None


def read_case_layers(path: PathOrPaths) -> LayerData:
    """Read a case (folder or file) and return its image and labels layer-data tuples.

    Raises
    ------
    SsegError
        With a one-paragraph message if the case cannot be read (napari shows it).
    """
    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg.io.readers import load_case

    p = _single_path(path)
    if p is None:
        from napari_ssseg.errors import InputError

        raise InputError(
            "napari-ssseg opens one case at a time: drop one case folder or one image file, "
            "or use the Loader panel to pick one file per modality."
        )
    if p.is_file() and match_modality(p.name) is None and _ndim(p) == 3:
        # a plain 3D volume without BraTS naming: one image, shown as the "t1" channel
        case = load_case(t1=p)
    else:
        case = load_case(p)
    from napari_ssseg._napari.layers import find_open_case, missing_modalities_note

    note = missing_modalities_note(case)
    if note is not None:
        from napari.utils.notifications import show_warning

        show_warning(note)
    layer_data = case_to_layer_data(case)
    viewer = _current_viewer()
    if viewer is None:
        return layer_data
    from napari_ssseg._napari.orientation import install_orientation

    install_orientation(viewer)
    if find_open_case(viewer, case) is None:
        return layer_data
    from napari.utils.notifications import show_info

    from napari_ssseg._napari.layers import iter_show_case

    gen = iter_show_case(viewer, case, layer_data)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            report = stop.value
            break
    show_info(f"{case.name}: {report.summary()}")
    return [(None,)]


def _current_viewer() -> Any | None:
    """The viewer that is opening the path, or ``None``.

    napari does not tell a reader which viewer called it: the viewer whose ``open`` is on
    the call stack is used (so ``viewer_b.open(...)`` never touches another viewer), else
    ``napari.current_viewer()``.
    """
    import sys

    try:
        from napari.components import ViewerModel
    except Exception:  # noqa: BLE001 - the reader works without napari's viewer
        return None
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ViewerModel):
            return owner
        frame = frame.f_back
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # noqa: BLE001
        return None


def _ndim(path: Path) -> int | None:
    """Number of dimensions in an image header (``None`` if the header cannot be read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # load_case reports the problem with a clear message
    return int(reader.GetDimension())
