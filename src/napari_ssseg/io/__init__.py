"""Reading and writing cases, images and labels (SimpleITK), dataset naming, atomic writes.

Only numpy, SimpleITK and the standard library are imported here: no torch, napari or Qt.
"""

from __future__ import annotations

from napari_ssseg.io.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_dir,
)
from napari_ssseg.io.naming import (
    IMAGE_SUFFIXES,
    MSD_CHANNELS,
    NAMINGS,
    is_image_file,
    match_modality,
    modality_filename,
    split_image_name,
)
from napari_ssseg.io.readers import (
    CaseFiles,
    describe_grid,
    detect_convention,
    find_case_files,
    geometry_of,
    load_case,
    read_image,
    read_labels,
    read_sitk,
    same_grid,
)
from napari_ssseg.io.writers import (
    case_from_arrays,
    save_image,
    save_labels,
    to_sitk,
    write_case,
    write_sitk,
)

__all__ = [
    "CaseFiles",
    "IMAGE_SUFFIXES",
    "MSD_CHANNELS",
    "NAMINGS",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "case_from_arrays",
    "check_writable_dir",
    "describe_grid",
    "detect_convention",
    "find_case_files",
    "geometry_of",
    "is_image_file",
    "load_case",
    "match_modality",
    "modality_filename",
    "read_image",
    "read_labels",
    "read_sitk",
    "same_grid",
    "save_image",
    "save_labels",
    "split_image_name",
    "to_sitk",
    "write_case",
    "write_sitk",
]
