"""FLOP-matched scaling sweeps: the budget axis, sweeps as data, size ladders, the report.

- `budgets`: EFLOPs(paper) = 6 N tokens / 1e18, budgets <-> checkpoint steps, `BudgetSchedule`;
- `spec`: `RunSpec` / `Sweep`, `load_sweep(experiment)` (an experiment's `get_sweep()`),
  run manifests (`<root>/<run>/sweep_run.json`);
- `ladder`: size ladders (depth/width/lr rules) and IsoFLOP grids;
- `report` (+ `plots`, `isoflop`): one CSV, accuracy/IsoFLOP PNGs and power-law fits of a
  sweep directory; `paper_rq4.csv` holds the paper's digitized Fig. 10.
"""
