"""Where the parity tests find their fixtures: every folder under `$COLAJAX_PARITY_DIR`
(default ../shared/reference) holding a given .npz and the given sub-folders' config.json."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = "COLAJAX_PARITY_DIR"
PARITY_DIR = os.environ.get(ENV, os.path.join(os.path.dirname(REPO), "shared", "reference"))
TOL = dict(rtol=1e-4, atol=1e-4)


def fixture_dirs(npz: str = "cases.npz", subdirs: tuple[str, ...] = (), prefix: str = ""):
    """Sorted folders under PARITY_DIR named `prefix*` that hold `npz` and a config.json in
    each of `subdirs` (in the folder itself when `subdirs` is empty)."""
    found = []
    for root, _, files in os.walk(PARITY_DIR):
        if not os.path.basename(root).startswith(prefix) or npz not in files:
            continue
        configs = [os.path.join(root, s, "config.json") for s in subdirs or ("",)]
        if all(os.path.isfile(c) for c in configs):
            found.append(root)
    return sorted(found)
