"""Cloud TPU slice names (`v5p-128`, `v5e-16`, `v6e-256`, `v4-32`) -> topology facts.

Used by `colajax aot` (compile for a slice on a CPU host via `jax.experimental.topologies`) and
the launchers' documentation. Naming: v4 and v5p count TensorCores (2 per chip, `v5p-128` = 64
chips, 3-D torus), v5e and v6e count chips (2-D). HBM is per chip as Google documents it.
No JAX import here.
"""

import dataclasses
import re

GiB = 1024**3

# family -> (topology prefix, cores per chip in the name, dims, chip_config, HBM, device_kind)
FAMILIES = {
    "v4": ("v4", 2, 3, "megacore", 32 * GiB, "TPU v4"),
    "v5p": ("v5", 2, 3, "megacore", 95 * GiB, "TPU v5"),
    "v5e": ("v5e", 1, 2, "default", 16 * GiB, "TPU v5 lite"),
    "v6e": ("v6e", 1, 2, "default", 32 * GiB, "TPU v6 lite"),
}
ALIASES = {"v5litepod": "v5e", "v6": "v6e", "v5": "v5p"}


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str  # e.g. 'v5p-128'
    family: str  # v4 | v5p | v5e | v6e
    chips: int
    topology_name: str  # e.g. 'v5:4x4x4' (jax.experimental.topologies)
    chip_config_name: str
    chips_per_host_bounds: tuple[int, int, int]
    wrap: tuple[bool, bool, bool]
    hbm_bytes: int  # per chip
    device_kind: str

    @property
    def hosts(self) -> int:
        return max(1, self.chips // 4)


def _dims(chips: int, ndim: int) -> list[int]:
    """Torus dims for `chips` (a power of two): double the last of the smallest dims."""
    if chips == 1:
        return [1] * ndim
    dims = [2, 2, 1][:ndim] if ndim == 3 else [1, 2]
    while dims[0] * dims[1] * (dims[2] if ndim == 3 else 1) < chips:
        low = min(dims)
        i = max(k for k, d in enumerate(dims) if d == low)
        dims[i] *= 2
    return dims


def parse(name: str) -> Slice:
    """`v5p-128` -> Slice; ValueError naming the accepted forms otherwise."""
    m = re.fullmatch(r"(v\d[a-z]*)-(\d+)", name.strip().lower())
    family = ALIASES.get(m.group(1), m.group(1)) if m else None
    if not m or family not in FAMILIES:
        raise ValueError(
            f"unknown TPU slice {name!r}; use v4-N, v5p-N, v5e-N (v5litepod-N) or v6e-N, "
            "e.g. v5p-128 (64 chips), v5e-16, v6e-256."
        )
    prefix, per_chip, ndim, config, hbm, kind = FAMILIES[family]
    count = int(m.group(2))
    chips = count // per_chip
    if count % per_chip or chips < 1 or chips & (chips - 1) or (ndim == 3 and chips == 2):
        raise ValueError(
            f"{name}: {family} slices have a power-of-two number of chips"
            + (
                f" and are named by cores ({per_chip} per chip), e.g. {family}-8"
                if per_chip > 1
                else ""
            )
            + "."
        )
    dims = _dims(chips, ndim)
    if ndim == 3:
        wrap = (all(d >= 4 for d in dims),) * 3
    else:
        wrap = (dims[0] == 16, dims[1] == 16, False)
    bounds = (1, 1, 1) if chips == 1 else (2, 2, 1) if chips >= 4 else (1, 2, 1)
    return Slice(
        name=f"{family}-{count}",
        family=family,
        chips=chips,
        topology_name=f"{prefix}:" + "x".join(map(str, dims)),
        chip_config_name=config,
        chips_per_host_bounds=bounds,
        wrap=wrap,
        hbm_bytes=hbm,
        device_kind=kind,
    )
