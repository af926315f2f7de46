"""``python -m napari_ssseg`` runs the ``ssseg`` command line."""

from napari_ssseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
