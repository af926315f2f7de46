"""napari-ssseg: semi-supervised brain-tumour MRI segmentation in napari.

The package is layered: :mod:`napari_ssseg.core` and :mod:`napari_ssseg.io` use only numpy,
scipy, scikit-image and SimpleITK; :mod:`napari_ssseg.ml` adds torch and MONAI;
:mod:`napari_ssseg._napari` is the only part that imports napari or Qt. Importing this
package imports none of torch, napari or Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
