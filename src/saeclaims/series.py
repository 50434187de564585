"""Typed figure data: what the workbench and claim tests hand to the report's figures.

Each record names its subject (and SAE id); records travel from xdist workers as JSON with their type
name, and `figures.py` declares which record type each figure draws and which claims own it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class PositionCurves:
    """Mean added loss (dCE) per position for each splice variant at one SAE."""

    subject: str
    sae_id: str
    context_size: int
    dce: dict[str, list[float]]
    full_context_dce: list[float] | None = None


@dataclass
class L0Curve:
    """Mean active latents of SAE(x) per position at one SAE."""

    subject: str
    sae_id: str
    context_size: int
    l0: list[float]


@dataclass
class HookNorms:
    """Mean activation norm (positions >= 1) and W_pos share at the hook of one SAE."""

    subject: str
    sae_id: str
    x_norm: float
    wpos_share: float
    wpos_norm: float | None = None


@dataclass
class Recoveries:
    """Recovery of the beyond-context excess per repair variant at one SAE: [estimate, low, high], and
    the excess itself (dCE_sae(O) - dCE_sae(I)) [estimate, low, high]: where its interval is not wholly
    above 0 there is nothing to recover and the recoveries are not applicable."""

    subject: str
    sae_id: str
    variants: dict[str, list[float]]
    excess: list[float] | None = None


@dataclass
class DecodedPositions:
    """Mean position decoded from the layer-0 reconstruction, for true positions from `first_position`."""

    subject: str
    sae_id: str
    context_size: int
    first_position: int
    mean_decoded: list[float]


@dataclass
class FeatureShares:
    """Per live layer-0 feature: variance share explained by token alone and by position alone."""

    subject: str
    sae_id: str
    token_share: list[float]
    position_share: list[float]


@dataclass
class WposRows:
    """W_pos rows 1..context-1 (after the model's weight processing) for the PCA figure."""

    subject: str
    context_size: int
    rows: list[list[float]]


Series = PositionCurves | L0Curve | HookNorms | Recoveries | DecodedPositions | FeatureShares | WposRows
SERIES_TYPES: dict[str, type] = {t.__name__: t for t in (PositionCurves, L0Curve, HookNorms, Recoveries,
                                                          DecodedPositions, FeatureShares, WposRows)}


def series_key(s: Series) -> tuple[str, str, str]:
    """Records with the same key describe the same thing; the later one replaces the earlier."""
    return type(s).__name__, s.subject, getattr(s, "sae_id", "")


def to_payload(s: Series) -> dict:
    return {"type": type(s).__name__, **asdict(s)}


def from_payload(d: dict) -> Series:
    d = dict(d)
    cls = SERIES_TYPES.get(d.pop("type", None))
    if cls is None:
        raise ValueError(f"unknown figure series type in payload: {sorted(d)}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
