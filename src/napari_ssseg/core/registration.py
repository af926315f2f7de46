"""Rigid co-registration of the sequences of one study (SimpleITK, Mattes mutual information).

Sequences of one study are acquired minutes apart; the scanner's world coordinates align them
only if the patient did not move. :func:`register_rigid` finds the rigid transform (rotation
about the fixed image's centre + translation) that maximises the Mattes mutual information
between a moving sequence and the reference, starting from the scanner's alignment (identity
in world coordinates), with a three-level pyramid. The result is **checked** before it is
used (:class:`RegistrationResult.check`):

* the metric after registration must be better than before (mutual information up);
* the transform must be one a patient can make inside a head coil (rotation <= 15 deg,
  translation <= 25 mm by default);
* the images must overlap enough for the metric to mean something.

A failed check raises :class:`RegistrationError` with the numbers, so nothing is guessed.
:func:`misalignment_mm` summarises a transform as the largest displacement of the fixed
image's field-of-view corners, which is how "detectably misaligned" is decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from napari_ssseg.errors import InputError, SsegError

__all__ = [
    "RegistrationError",
    "RegistrationResult",
    "register_rigid",
    "misalignment_mm",
    "transform_to_arrays",
    "transform_from_arrays",
    "MAX_ROTATION_DEG",
    "MAX_TRANSLATION_MM",
    "MISALIGNED_MM",
    "NO_GAIN_MM",
]

#: Largest rotation (degrees) accepted between two sequences of one session. A real study
#: (TCGA-FG-6692, ``../shared/data/real``) has its FLAIR 18 deg rolled against the T2 of the
#: same session (seen on the images, and confirmed by the head-mask overlap check), so the
#: limit is generous; the mutual-information and head-overlap checks do the real work.
MAX_ROTATION_DEG = 30.0
#: Largest translation (mm) accepted between two sequences of one session.
MAX_TRANSLATION_MM = 25.0
#: Displacement (mm, largest over the field-of-view corners) above which sequences are
#: considered misaligned and the registration's transform is used.
MISALIGNED_MM = 1.0
#: Largest displacement (mm) of a registration that did not improve the mutual information
#: and is still read as "already aligned" (the scanner's alignment is kept, no error): an
#: optimiser started at the optimum drifts by a fraction of a voxel, with a metric a little
#: worse, depending on its random sampling and the number of threads.
NO_GAIN_MM = 2.0
#: Bumped whenever registration may give another result for the same input (cache key).
REGISTRATION_VERSION = 3
#: Isotropic voxel size (mm) both images are resampled to before registering (thick-slice
#: clinical series would otherwise lose most of their slices in the pyramid's shrinking).
REGISTRATION_MM = 2.0


class RegistrationError(SsegError):
    """A sequence could not be aligned to the reference (the check failed)."""


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_rigid`.

    Attributes
    ----------
    transform : SimpleITK.Euler3DTransform
        Maps fixed (reference) world points to moving world points: resampling the moving
        image through it puts it on the reference.
    metric_before, metric_after : float
        Mattes mutual information (SimpleITK's value: *negative* MI, lower is better) at the
        scanner's alignment and after registration, evaluated the same way.
    rotation_deg : float
        Rotation angle of the transform.
    translation_mm : float
        Length of the translation (at the rotation centre).
    displacement_mm : float
        Largest displacement of the fixed field-of-view corners (:func:`misalignment_mm`).
    iterations : int
        Optimizer iterations at the finest level.
    stop : str
        The optimizer's stop condition.
    problems : list of str
        Why the check failed (empty: it passed).
    head_dice_before, head_dice_after : float or None
        Overlap of the two head outlines at the scanner's alignment and after registration.
    no_gain : bool
        The registration did not improve the mutual information but moved the field of view
        by at most :data:`NO_GAIN_MM` and passed every other check: the sequences are already
        aligned and the scanner's alignment should be kept (:attr:`transform` is not to be
        used; :attr:`passed` is True).
    """

    transform: sitk.Euler3DTransform
    metric_before: float
    metric_after: float
    rotation_deg: float
    translation_mm: float
    displacement_mm: float
    iterations: int
    stop: str
    problems: list[str] = field(default_factory=list)
    head_dice_before: float | None = None
    head_dice_after: float | None = None
    no_gain: bool = False

    @property
    def passed(self) -> bool:
        """True if the check passed."""
        return not self.problems

    @property
    def misaligned(self) -> bool:
        """True if the transform should be used: it improved the alignment and moves the field
        of view by more than :data:`MISALIGNED_MM`."""
        return not self.no_gain and self.displacement_mm > MISALIGNED_MM

    def check(self, name: str = "the moving image") -> None:
        """Raise :class:`RegistrationError` if the check failed."""
        if self.problems:
            raise RegistrationError(
                f"Registration of {name} to the reference failed its check: "
                + "; ".join(self.problems)
                + f" (Mattes MI {-self.metric_before:.4f} before, {-self.metric_after:.4f} "
                "after). The result is not used. Check that the series belongs to this study, "
                "or pass --register off to trust the scanner's coordinates."
            )

    def summary(self) -> dict:
        """JSON-friendly numbers."""
        return {
            "mattes_mi_before": round(-self.metric_before, 5),
            "mattes_mi_after": round(-self.metric_after, 5),
            "rotation_deg": round(self.rotation_deg, 3),
            "translation_mm": round(self.translation_mm, 3),
            "displacement_mm": round(self.displacement_mm, 3),
            "iterations": int(self.iterations),
            "head_dice_before": _r(self.head_dice_before),
            "head_dice_after": _r(self.head_dice_after),
            "passed": self.passed,
            "no_gain": bool(self.no_gain),
            "problems": list(self.problems),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def _isotropic(image: sitk.Image, mm: float) -> sitk.Image:
    """``image`` resampled (linear) to ``mm`` voxels in its own orientation and extent."""
    sp = np.asarray(image.GetSpacing(), float)
    size = [max(2, int(round(n * s / mm))) for n, s in zip(image.GetSize(), sp)]
    # keep the physical centre of the first and last voxels' span
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), float)
    extent = (np.asarray(image.GetSize()) - 1) * sp
    new_extent = (np.asarray(size) - 1) * mm
    new_origin = origin + direction @ ((extent - new_extent) / 2.0)
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        tuple(new_origin),
        (mm, mm, mm),
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )


def _head_mask(image: sitk.Image) -> sitk.Image:
    """Foreground (head) of a normalised image: Otsu threshold, largest component, filled."""
    fg = sitk.OtsuThreshold(image, 0, 1, 128)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg), sortByObjectSize=True)
    return sitk.Cast(sitk.BinaryFillhole(cc == 1), sitk.sitkUInt8)


def _head_dice(fixed_head: sitk.Image, moving_head: sitk.Image, transform: sitk.Transform) -> float:
    """Dice of the fixed head mask and the moving one resampled through ``transform``.

    Only the fixed voxels inside the moving field of view count (a series covering fewer
    slices is not penalised for what it does not show).
    """
    ones = sitk.Image(moving_head.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving_head)
    inside = (
        sitk.GetArrayViewFromImage(
            sitk.Resample(ones, fixed_head, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        )
        > 0
    )
    m = (
        sitk.GetArrayViewFromImage(
            sitk.Resample(moving_head, fixed_head, transform, sitk.sitkNearestNeighbor, 0)
        )
        > 0
    )
    f = sitk.GetArrayViewFromImage(fixed_head) > 0
    from napari_ssseg.core.metrics import dice

    return dice(f & inside, m & inside)


def _itk(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _corners(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    pts = []
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k in (0, size[2] - 1):
                pts.append(image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
    return np.asarray(pts, float)


def misalignment_mm(transform: sitk.Transform, fixed: sitk.Image) -> float:
    """Largest displacement (mm) of the fixed image's field-of-view corners by ``transform``."""
    pts = _corners(fixed)
    moved = np.asarray([transform.TransformPoint(tuple(p)) for p in pts])
    return float(np.max(np.linalg.norm(moved - pts, axis=1)))


def _rotation_deg(tx: sitk.Euler3DTransform) -> float:
    m = np.asarray(tx.GetMatrix(), float).reshape(3, 3)
    c = (np.trace(m) - 1.0) / 2.0
    return float(math.degrees(math.acos(max(-1.0, min(1.0, c)))))


def _normalised(image: sitk.Image) -> sitk.Image:
    img = sitk.Cast(image, sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(img)
    nz = arr[arr > 0]
    if nz.size < 100:
        return img
    hi = float(np.percentile(nz, 99.5))
    return sitk.Clamp(img, sitk.sitkFloat32, 0.0, hi if hi > 0 else 1.0)


def _evaluate(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    fixed_mask: sitk.Image | None,
    bins: int,
) -> float:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.NONE)  # every voxel: deterministic
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(transform, inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


def _overlap_fraction(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Fraction of the fixed image's foreground that falls inside the moving field of view."""
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8)
    ones.CopyInformation(moving)
    ones = ones + 1
    inside = sitk.Resample(ones, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    fg = sitk.GetArrayViewFromImage(fixed) > 0
    if not fg.any():
        return 0.0
    return float((sitk.GetArrayViewFromImage(inside)[fg] > 0).mean())


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    fixed_mask: sitk.Image | None = None,
    bins: int = 32,
    sampling: float = 0.25,
    iterations: int = 200,
    shrink: tuple[int, ...] = (4, 2, 1),
    smoothing_mm: tuple[float, ...] = (4.0, 2.0, 0.0),
    max_rotation_deg: float = MAX_ROTATION_DEG,
    max_translation_mm: float = MAX_TRANSLATION_MM,
    min_overlap: float = 0.5,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    working_mm: float | None = REGISTRATION_MM,
) -> RegistrationResult:
    """Rigidly register ``moving`` to ``fixed`` by Mattes mutual information, then check it.

    Parameters
    ----------
    fixed, moving : SimpleITK.Image
        3D images with their own geometry (any grids, any sequences of one study).
    fixed_mask : SimpleITK.Image, optional
        Where the metric is sampled on the fixed grid (e.g. the head).
    bins : int
        Histogram bins of the Mattes metric.
    sampling : float
        Fraction of voxels sampled per iteration (random, seeded).
    iterations : int
        Maximum iterations per pyramid level.
    shrink, smoothing_mm : tuples
        Pyramid shrink factors and Gaussian smoothing (mm) per level.
    max_rotation_deg, max_translation_mm : float
        Plausibility limits of the check.
    min_overlap : float
        Smallest fraction of the fixed foreground inside the moving field of view.
    seed : int
        Seed of the metric's random sampling (results are reproducible).
    should_stop : callable, optional
        Polled at every iteration; returning True aborts (raises ``Cancelled``).
    working_mm : float or None
        Both images are first resampled to isotropic voxels of this size (mm) in their own
        orientation (default :data:`REGISTRATION_MM`); None registers the native grids. The
        transform is in world coordinates either way.

    Returns
    -------
    RegistrationResult
        Always returned; call :meth:`RegistrationResult.check` to refuse a failed one.
    """
    from napari_ssseg.core.progress import Cancelled

    if working_mm is not None:
        if not (np.isfinite(working_mm) and working_mm > 0):
            raise InputError(f"working_mm={working_mm!r}; expected a voxel size > 0 (mm) or None.")
        fixed = _isotropic(fixed, float(working_mm))
        moving = _isotropic(moving, float(working_mm))
        if fixed_mask is not None:
            fixed_mask = sitk.Resample(
                fixed_mask, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
            )
    f = _normalised(fixed)
    m = _normalised(moving)
    init = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    # keep the scanner's alignment as the start: centre of rotation at the fixed centre,
    # no translation (GEOMETRY would move the centres of two different fields of view)
    start = sitk.Euler3DTransform()
    start.SetCenter(init.GetCenter())
    try:
        before = _evaluate(f, m, start, fixed_mask, bins)
    except RuntimeError as exc:
        raise RegistrationError(
            "Registration to the reference failed its check: the images do not overlap in "
            f"the scanner's coordinates, so mutual information cannot be measured ({_itk(exc)}"
            "). Check that the series belongs to this study, or pass --register off."
        ) from None

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(sampling), int(seed))
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=int(iterations),
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=False)
    if should_stop is not None:

        def _poll() -> None:
            if should_stop():
                reg.StopRegistration()

        reg.AddCommand(sitk.sitkIterationEvent, _poll)
    try:
        out = reg.Execute(f, m)
    except RuntimeError as exc:
        raise RegistrationError(
            f"Registration to the reference failed: {_itk(exc)} (Mattes MI {-before:.4f} at "
            "the scanner's alignment). Check that the series belongs to this study, or pass "
            "--register off to trust the scanner's coordinates."
        ) from None
    if should_stop is not None and should_stop():
        raise Cancelled("registration cancelled")
    if isinstance(out, sitk.CompositeTransform):
        out = out.GetNthTransform(0)
    tx = sitk.Euler3DTransform(out)
    after = _evaluate(f, m, tx, fixed_mask, bins)
    rot = _rotation_deg(tx)
    trans = float(np.linalg.norm(tx.GetTranslation()))
    disp = misalignment_mm(tx, fixed)
    problems = []
    worse = not after <= before + 1e-4
    if rot > max_rotation_deg:
        problems.append(
            f"rotation {rot:.1f} deg is more than a patient turns in a head coil "
            f"(limit {max_rotation_deg:g} deg)"
        )
    if trans > max_translation_mm:
        problems.append(
            f"translation {trans:.1f} mm is more than a patient moves in a head coil "
            f"(limit {max_translation_mm:g} mm)"
        )
    fh, mh = _head_mask(f), _head_mask(m)
    head_before, head_after = _head_dice(fh, mh, start), _head_dice(fh, mh, tx)
    if head_after < head_before - 0.02:
        problems.append(
            f"the head outlines overlap less after it (Dice {head_before:.3f} -> {head_after:.3f})"
        )
    overlap = _overlap_fraction(f, m, tx)
    if overlap < min_overlap:
        problems.append(
            f"only {100 * overlap:.0f}% of the reference's foreground lies inside the moving "
            f"image (need {100 * min_overlap:.0f}%)"
        )
    # no gain: the optimiser started at the optimum and drifted a little; keep the scanner's
    # alignment. A worse metric after a large move (or with another problem) is a failure.
    no_gain = worse and not problems and disp <= NO_GAIN_MM
    if worse and not no_gain:
        problems.insert(0, f"the mutual information got worse ({-before:.4f} -> {-after:.4f})")
    return RegistrationResult(
        transform=tx,
        metric_before=before,
        metric_after=after,
        rotation_deg=rot,
        translation_mm=trans,
        displacement_mm=disp,
        iterations=int(reg.GetOptimizerIteration()),
        stop=str(reg.GetOptimizerStopConditionDescription()),
        problems=problems,
        head_dice_before=head_before,
        head_dice_after=head_after,
        no_gain=no_gain,
    )


def transform_to_arrays(tx: sitk.Euler3DTransform) -> dict[str, np.ndarray]:
    """Parameters of a rigid transform as arrays (for the cache)."""
    return {
        "parameters": np.asarray(tx.GetParameters(), np.float64),
        "fixed_parameters": np.asarray(tx.GetFixedParameters(), np.float64),
    }


def transform_from_arrays(d: dict[str, np.ndarray]) -> sitk.Euler3DTransform:
    """Inverse of :func:`transform_to_arrays`."""
    tx = sitk.Euler3DTransform()
    tx.SetFixedParameters([float(v) for v in np.asarray(d["fixed_parameters"])])
    tx.SetParameters([float(v) for v in np.asarray(d["parameters"])])
    return tx
