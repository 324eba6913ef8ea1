"""The embedded simulator: seeded, realistic traffic for the loaded workflow definitions, a
Bytewax source that plays it, and the ground truth the pipeline's verdicts must match.

    sim = simulate(SimulatorConfig(seed=7), load_catalog(Path("definitions")))
    records = op.input("in", flow, SimulatorSource(sim.partitions))
    write_ground_truth(sim, out_dir)

The truth holds for a pipeline with the same `allowed_lateness_ms`, `buckets` and
`max_future_skew_ms`, draining at the end of input, and without the wall-clock idle grace (which
moves watermarks by wall time).

Modules: `scenarios` (what happens to each instance), `payloads` (sample data per event type),
`traffic` (records, arrival times, faults), `replica` and `oracle` (the expected results, from the
definition semantics, independent of the engine), `truth` (rows, Parquet), `source` (Bytewax).
"""

from connectors.simulator.config import Faults, Habits, OutcomeMix, SimulatorConfig
from connectors.simulator.source import SimulatorSource
from connectors.simulator.traffic import simulate
from connectors.simulator.truth import Simulation, TruthInstance, TruthRecord, write_ground_truth

__all__ = [
    "Faults",
    "Habits",
    "OutcomeMix",
    "Simulation",
    "SimulatorConfig",
    "SimulatorSource",
    "TruthInstance",
    "TruthRecord",
    "simulate",
    "write_ground_truth",
]
