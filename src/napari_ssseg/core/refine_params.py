"""The parameters of superpixel refinement: tuned defaults, validation, :class:`RefineOptions`.

One place for every option of Thompson et al.'s Algorithm 1 and of the project's extensions
(:mod:`napari_ssseg.core.refine` explains the algorithm): the tuned per-region defaults, the
similarity weights, the checks of ``sim0`` / ``n_c``, and :class:`RefineOptions`, the one
object that :func:`~napari_ssseg.core.refine.refine_labels` and
:func:`~napari_ssseg.core.refine.refine_case` take (so no caller can drop an option on the
way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from napari_ssseg import defaults
from napari_ssseg.core.case import REGION_MODALITIES, region_channel_indices
from napari_ssseg.errors import InputError, check_choice

#: Stopping similarity tuned on phantoms (seeds 1000-1009) for the paper's strict mutual-best
#: rule, see docs/refinement.md (with ``mutual_tolerance > 0`` a higher value is needed). On
#: real scans the strict rule, not sim0, stops growth below sim0 ~0.5; a configuration
#: re-tuned on real scans did not gain on held-out real cases, so this stays
#: (docs/refinement.md, "Tuned on real scans").
DEFAULT_SIM0: float = defaults.SIM0
#: Candidates checked per merge minus one (the paper's value).
DEFAULT_NC: int = defaults.NC
#: Approximate SLIC superpixel count of the whole volume used by :func:`refine_case` and
#: ``ssseg refine`` (the paper's 350): about 230 superpixels inside a real 1 mm brain, ~6 ml
#: (~23 mm across) each. 1000 (~2 ml) fitted the tuning real cases better but not the
#: held-out ones (docs/refinement.md, "Tuned on real scans"). :data:`napari_ssseg.defaults.\
#: N_SEGMENTS`, shared with the CLI, the pseudo-label-superpixel strategy and the panels.
DEFAULT_N_SEGMENTS: int = defaults.N_SEGMENTS
#: How the refined mask is assembled, per region (tuned, see docs/refinement.md); used when
#: ``output=None``. Sessions without a region use ``"union"``.
DEFAULT_OUTPUT: dict[str, str] = {"wt": "union", "tc": "added"}
#: With ``output="union"``: seed superpixels covered by at least this fraction of ``p0`` are
#: filled completely (0.5 fills every seed superpixel) **[ours]**, tuned.
DEFAULT_FILL: float = defaults.FILL
#: With ``output="union"``: a seed superpixel is filled only where ``p0``'s boundary inside it
#: is weak — mean border map on that cut <= ``fill_edge * sigma_b`` **[ours]**, tuned.
DEFAULT_FILL_EDGE: float = defaults.FILL_EDGE
#: Component pre-step **[ours]**, per region: before fitting, connected components of ``p0``
#: other than the largest are dropped when they are small and do not look like it (see
#: :meth:`RefinementSession.fit`). ``False`` recovers the paper's Algorithm 1.
DEFAULT_COMPONENTS: dict[str, bool] = {"wt": True, "tc": True}
#: A small component is dropped when the content similarity ``S_c`` of its superpixels to the
#: largest component's is below this value **[ours]**, tuned on phantoms seeds 1000-1009.
DEFAULT_COMPONENT_SIM: float = 0.6
#: Components with at least this fraction of the largest component's voxels are always kept
#: (multifocal tumours) **[ours]**.
DEFAULT_COMPONENT_KEEP: float = 0.5
#: Mutual-best rule of the growth: ``"region"`` is the paper's (the candidate's most similar
#: neighbour must be the region as one node); ``"member"`` **[ours]** also accepts a candidate
#: whose most similar neighbour is one of the region's superpixels. Per region.
DEFAULT_MUTUAL: dict[str, str] = {"wt": "region", "tc": "region"}
#: Tolerance of the mutual-best test **[ours]**, per region: the candidate passes when the
#: region's side is at least ``(1 - tolerance)`` times its best outside neighbour. 0 = the
#: paper's rule, the default: the tolerance tuned on seeds 1000-1009 (WT 0.2 with sim0 0.45)
#: leaked into healthy tissue on held-out phantoms (docs/benchmarks/refine.md), and WT 0.1
#: with sim0 0.4 and 1000 superpixels, tuned on real scans, makes growth act there (the
#: strict rule stops it after 0-1 merges whatever sim0 is) but did not gain Dice on held-out
#: real cases (docs/refinement.md, "Tuned on real scans").
DEFAULT_MUTUAL_TOLERANCE: dict[str, float] = {"wt": 0.0, "tc": 0.0}
MUTUAL_RULES = ("region", "member")
#: Channels each region is refined on **[paper]** (WT: FLAIR; TC: T2 + T1Gd): the rows of
#: the one table :data:`napari_ssseg.core.case.REGION_MODALITIES`, which superpixels use too.
REGION_CHANNELS: dict[str, tuple[str, ...]] = {
    r: REGION_MODALITIES[r.upper()] for r in ("wt", "tc")
}
OUTPUTS = ("added", "union", "superpixels")
REGION_FEATURES = ("centroid", "union")
DECIMALS = 10
FIT_FRACTION = 0.5


def round_similarity(s: np.ndarray | float) -> np.ndarray:
    """Similarities rounded to :data:`DECIMALS` decimals (the tie rule both growths share)."""
    return np.round(s, DECIMALS)


# --------------------------------------------------------------------------- validation
def check_sim0(sim0: float) -> float:
    """Return ``sim0`` as float if it lies in [0, 1], else raise :class:`InputError`."""
    try:
        v = float(sim0)
    except (TypeError, ValueError):
        raise InputError(f"sim0={sim0!r} is not a number; expected a value in [0, 1].") from None
    if not np.isfinite(v) or v < 0.0 or v > 1.0:
        raise InputError(
            f"sim0={sim0!r} is out of range; the stopping similarity must lie in [0, 1] "
            f"(0 grows as far as the mutual-best rule allows, 1 never grows). "
            f"Default: {DEFAULT_SIM0}."
        )
    return v


def check_nc(n_c: int) -> int:
    """Return ``n_c`` as int if it is an integer >= 1, else raise :class:`InputError`."""
    if isinstance(n_c, bool) or not isinstance(n_c, (int, np.integer)):
        if isinstance(n_c, float) and float(n_c).is_integer():
            n_c = int(n_c)
        else:
            raise InputError(f"n_c={n_c!r} must be an integer >= 1 (default {DEFAULT_NC}).")
    if int(n_c) < 1:
        raise InputError(
            f"n_c={n_c!r} is out of range; the number of candidates checked per merge must "
            f"be an integer >= 1 (default {DEFAULT_NC})."
        )
    return int(n_c)


def check_unit(name: str, value: float) -> float:
    """Return ``value`` as float if it lies in [0, 1], else raise :class:`InputError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number; expected a value in [0, 1].") from None
    if not np.isfinite(v) or v < 0.0 or v > 1.0:
        raise InputError(f"{name}={value!r} is out of range; it must lie in [0, 1].")
    return v


def check_mutual(mutual: str, tolerance: float) -> tuple[str, float]:
    """Return the checked mutual-best rule and tolerance (``"region"|"member"``, [0, 1))."""
    mutual = check_choice("mutual", mutual, MUTUAL_RULES)
    try:
        t = float(tolerance)
    except (TypeError, ValueError):
        raise InputError(f"mutual_tolerance={tolerance!r} is not a number.") from None
    if not np.isfinite(t) or t < 0.0 or t >= 1.0:
        raise InputError(
            f"mutual_tolerance={tolerance!r} is out of range; it must lie in [0, 1) "
            f"(0: the paper's mutual-best rule)."
        )
    return mutual, t


def region_channels(modalities: Sequence[str], region: str) -> tuple[list[int], list[str]]:
    """Channel indices used to refine ``region``, falling back when a modality is missing.

    WT uses FLAIR, TC uses T2 and T1Gd **[paper]**. The same channels as the region's
    superpixels (:func:`napari_ssseg.core.case.region_channel_indices`, one table for
    both): when some are missing the available ones among them are used, when all are
    missing all the case's channels, with a :class:`UserWarning`.

    Returns
    -------
    indices : list of int
    names : list of str
        The channels' names, lower case.
    """
    region = check_choice("region", region, ("wt", "tc"))
    idx = region_channel_indices(modalities, region, stacklevel=3)
    return idx, [str(modalities[i]).lower() for i in idx]


# --------------------------------------------------------------------------- similarity
@dataclass(frozen=True)
class SimilarityWeights:
    """Exponents of the similarity ``S = S_c ** content * S_b ** border`` **[ours]**.

    The default ``content = border = 0.5`` is ``S = sqrt(S_c * S_b)`` (algorithms.md §3).
    ``ward=True`` replaces the content distance by Ward's criterion.
    """

    content: float = 0.5
    border: float = 0.5
    ward: bool = False
    region_features: str = "centroid"
    clip: float = 3.0

    def __post_init__(self) -> None:
        check_choice("region_features", self.region_features, REGION_FEATURES)
        if not np.isfinite(self.clip) or self.clip < 0:
            raise InputError(f"clip={self.clip!r} must be >= 0 (0 disables clipping).")
        for name in ("content", "border"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise InputError(f"similarity weight {name}={v!r} must be a number >= 0.")
        if self.content == 0 and self.border == 0:
            raise InputError("similarity weights content and border cannot both be 0.")


#: Similarity options per region (tuned on phantoms, see docs/refinement.md).
DEFAULT_WEIGHTS: dict[str, SimilarityWeights] = {
    "wt": SimilarityWeights(),
    "tc": SimilarityWeights(content=0.75, border=0.25),
}


def per_region(value: Any, region: str, name: str) -> Any:
    """``value[region]`` for a per-region mapping (keys case-insensitive), else ``value``.

    Raises
    ------
    InputError
        A mapping without an entry for ``region``.
    """
    if isinstance(value, Mapping):
        low = {str(k).lower(): v for k, v in value.items()}
        if region not in low:
            raise InputError(f"{name} has no entry for region {region!r}: {dict(value)!r}.")
        return low[region]
    return value


@dataclass(frozen=True)
class RefineOptions:
    """Every option of a refinement, in one object (Algorithm 1 and the extensions **[ours]**).

    :func:`~napari_ssseg.core.refine.refine_labels` and
    :func:`~napari_ssseg.core.refine.refine_case` take one (``options=``) and pass it on
    whole, so no layer can drop an option. Keyword arguments of the same names override its
    fields (``refine_case(case, p0, sim0=0.3)`` is
    ``refine_case(case, p0, options=RefineOptions(sim0=0.3))``). ``None`` means the region's
    tuned default. Values are checked when the object is made.

    Attributes
    ----------
    sim0 : float or {"wt": float, "tc": float}
        Stopping similarity in [0, 1] (default :data:`DEFAULT_SIM0`).
    n_c : int
        Candidates checked per merge minus one, >= 1 (default :data:`DEFAULT_NC`).
    weights : SimilarityWeights or {"wt": ..., "tc": ...} or None
        Similarity exponents; ``None``: :data:`DEFAULT_WEIGHTS`.
    shrink : bool
        Also drop seed superpixels that look unlike the region (off by default).
    output : {"union", "added", "superpixels"} or None
        How the refined mask is assembled; ``None``: :data:`DEFAULT_OUTPUT`.
    fill, fill_edge : float or None
        Fill rules of ``output="union"``; ``None``: :data:`DEFAULT_FILL`,
        :data:`DEFAULT_FILL_EDGE`.
    components : bool or None
        Component pre-step; ``None``: :data:`DEFAULT_COMPONENTS` (on).
    component_sim, component_keep : float or None
        Its thresholds; ``None``: :data:`DEFAULT_COMPONENT_SIM`, :data:`DEFAULT_COMPONENT_KEEP`.
    mutual : {"region", "member"} or a per-region mapping or None
        Mutual-best rule; ``None``: :data:`DEFAULT_MUTUAL`.
    mutual_tolerance : float in [0, 1) or a per-region mapping or None
        ``None``: :data:`DEFAULT_MUTUAL_TOLERANCE` (0, the paper's rule).

    Examples
    --------
    >>> RefineOptions.paper()            # Thompson et al.'s Algorithm 1, no extension
    >>> RefineOptions(sim0={"wt": 0.3, "tc": 0.5}).replace(n_c=10)
    """

    sim0: float | Mapping[str, float] = DEFAULT_SIM0
    n_c: int = DEFAULT_NC
    weights: SimilarityWeights | Mapping[str, SimilarityWeights] | None = None
    shrink: bool = False
    output: str | None = None
    fill: float | None = None
    fill_edge: float | None = None
    components: bool | None = None
    component_sim: float | None = None
    component_keep: float | None = None
    mutual: str | Mapping[str, str] | None = None
    mutual_tolerance: float | Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        for region in ("wt", "tc"):  # a mapping may name only the regions it is used for
            for name in ("sim0", "mutual", "mutual_tolerance"):
                value = getattr(self, name)
                if isinstance(value, Mapping) and region not in self._lower(value):
                    continue
                v = per_region(value, region, name)
                if name == "sim0":
                    check_sim0(v)
                elif v is not None and name == "mutual":
                    check_choice("mutual", v, MUTUAL_RULES)
                elif v is not None:
                    check_mutual("region", v)
        object.__setattr__(self, "n_c", check_nc(self.n_c))
        if self.output is not None:
            check_choice("output", self.output, OUTPUTS)
        for name in ("fill", "component_sim", "component_keep"):
            if getattr(self, name) is not None:
                check_unit(name, getattr(self, name))
        if self.fill_edge is not None:
            v = float(self.fill_edge)
            if np.isnan(v) or v < 0:
                raise InputError(
                    f"fill_edge={self.fill_edge!r} is out of range; it must be >= 0 (inf: fill "
                    "every seed superpixel whatever its edge)."
                )

    @staticmethod
    def _lower(value: Mapping) -> set[str]:
        return {str(k).lower() for k in value}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names (the fields), in order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def paper(cls, **changes: Any) -> RefineOptions:
        """The paper's Algorithm 1: no component pre-step, the strict mutual-best rule."""
        return cls(components=False, mutual="region", mutual_tolerance=0.0).replace(**changes)

    @classmethod
    def resolve(
        cls, options: RefineOptions | None, overrides: Mapping[str, Any], caller: str
    ) -> RefineOptions:
        """``options`` (default: all defaults) with the keyword ``overrides`` applied.

        Raises
        ------
        TypeError
            An override that is not an option (named, with the valid names), as Python does
            for an unknown keyword argument.
        """
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"{caller}() got unexpected keyword argument(s) {', '.join(unknown)}; the "
                f"refinement options are: {', '.join(cls.names())}."
            )
        if options is not None and not isinstance(options, RefineOptions):
            raise TypeError(
                f"{caller}(options=...) must be a RefineOptions, not {type(options).__name__}."
            )
        return (options or cls()).replace(**overrides)

    def replace(self, **changes: Any) -> RefineOptions:
        """A copy with ``changes`` applied (checked)."""
        return replace(self, **changes) if changes else self

    def for_region(self, region: str) -> dict[str, Any]:
        """Keyword arguments of :meth:`RefinementSession.refine` for one region.

        ``sim0`` and ``n_c`` included; per-region mappings resolved; ``weights`` left out
        (a session's similarity is fixed when it is built).
        """
        return {
            "sim0": check_sim0(per_region(self.sim0, region, "sim0")),
            "n_c": self.n_c,
            "shrink": bool(self.shrink),
            "output": self.output,
            "fill": self.fill,
            "fill_edge": self.fill_edge,
            "components": self.components,
            "component_sim": self.component_sim,
            "component_keep": self.component_keep,
            "mutual": per_region(self.mutual, region, "mutual"),
            "mutual_tolerance": per_region(self.mutual_tolerance, region, "mutual_tolerance"),
        }

    def region_weights(self, region: str) -> SimilarityWeights | None:
        """The similarity weights of ``region`` (``None``: its tuned default)."""
        return None if self.weights is None else per_region(self.weights, region, "weights")

    def to_info(self) -> dict[str, Any]:
        """JSON-friendly copy (mappings as dicts, weights as dicts)."""
        out = asdict(self)  # SimilarityWeights become dicts
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in out.items()}
