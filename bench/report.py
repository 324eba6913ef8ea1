"""Turn the runs into rates, side-by-side ratios and target verdicts, and print them as a table."""

from __future__ import annotations

import statistics
from typing import Any

# (name, numerator, denominator, target or None (shown only), "min" if it must reach it else "max")
# Against `twin`, the consumer a user would write by hand (`bench.twin`), never only our own code.
RATIOS = [
    ("pipeline / twin", "pipeline", "twin", 0.1, "min"),
    ("pipeline_sinks / pipeline", "pipeline_sinks", "pipeline", 0.75, "min"),
    ("pipeline_sinks / twin", "pipeline_sinks", "twin", 0.15, "min"),
    ("decode_only / twin", "decode_only", "twin", 0.6, "min"),
    ("decode_mapped / decode_only", "decode_mapped", "decode_only", 0.8, "min"),
    ("decode_avro / decode_only", "decode_avro", "decode_only", 0.8, "min"),
    ("baseline / twin", "baseline", "twin", None, "min"),
    ("pipeline / baseline", "pipeline", "baseline", None, "min"),  # what the runtime keeps
    ("recovery on / off", "pipeline_recovery", "pipeline_sinks", 0.9, "min"),
    ("2 processes / 1 process", "pipeline_2proc", "pipeline_sinks", 1.7, "min"),
]
LOWEST_2PROC = 1.5  # no single repeat of "2 processes / 1 process" may fall below it

# Targets on the extras' figures: (label, extra, key, target, "min" or "max").
EXTRA_TARGETS = [
    ("kafka_sinks records/s", "kafka", "kafka_sinks_per_s_median", 15_000, "min"),
    ("kafka / Quix Streams (validated)", "kafka", "kafka_vs_quix_validated", 1.0, "min"),
    ("run --processes 2 / --processes 1", "cli", "processes_2_vs_1", 1.6, "min"),
    ("RSS bytes per open instance", "memory", "rss_bytes_per_instance", 1024, "max"),
    ("restore of the open instances, s", "memory", "restore_seconds", 10, "max"),
]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates per variant (median, min, max) and ratios taken within each repeat, then the median."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r)
    rates = {}
    for variant, found in by_variant.items():
        values = [r["records"] / r["seconds"] for r in found]
        rates[variant] = {"records": found[0]["records"], "rows": found[0]["rows"],
                          "median": statistics.median(values), "min": min(values),
                          "max": max(values),
                          "peak_rss_mib": statistics.median(r["peak_rss_kib"]
                                                            for r in found) / 1024}
    ratios = {}
    for name, top, bottom, target, kind in RATIOS:
        per_repeat = _ratios(runs, top, bottom)
        if per_repeat:
            value = statistics.median(per_repeat)
            met = None if target is None else reaches(value, target, kind)
            if name == "2 processes / 1 process" and met:
                met = min(per_repeat) >= LOWEST_2PROC
            ratios[name] = {"median": value, "per_repeat": per_repeat, "target": target, "met": met}
    return {"rates": rates, "ratios": ratios}


def reaches(value: float, target: float, kind: str) -> bool:
    """Whether `value` meets `target`: at least it ("min") or at most it ("max")."""
    return value >= target if kind == "min" else value <= target


def _ratios(runs: list[dict[str, Any]], top: str, bottom: str) -> list[float]:
    rate = {(r["variant"], r["repeat"]): r["records"] / r["seconds"] for r in runs}
    return [rate[(top, rep)] / rate[(bottom, rep)] for (v, rep) in rate
            if v == top and (bottom, rep) in rate]


def render(result: dict[str, Any]) -> str:
    """The table people read; the JSON holds the same numbers and every single run."""
    m = result["machine"]
    lines = [f"flowkeeper bench: {result['instances']:,} instances, {result['repeats']} repeat(s), "
             f"{m['cpus']} CPUs, Python {m['python']}", "",
             f"{'variant':<22}{'records':>10}{'median/s':>11}{'min/s':>10}{'max/s':>10}"
             f"{'RSS MiB':>9}"]
    for variant, r in result["summary"]["rates"].items():
        lines.append(f"{variant:<22}{r['records']:>10,}{r['median']:>11,.0f}{r['min']:>10,.0f}"
                     f"{r['max']:>10,.0f}{r['peak_rss_mib']:>9,.0f}")
    lines += ["", f"{'ratio (side by side)':<34}{'median':>8}{'target':>8}  met"]
    for name, r in result["summary"]["ratios"].items():
        if r["target"] is None:
            lines.append(f"{name:<34}{r['median']:>8.2f}{'-':>8}")
        else:
            met = "yes" if r["met"] else "NO"
            lines.append(f"{name:<34}{r['median']:>8.2f}{r['target']:>8.2f}  {met}")
    for name, extra in result["extras"].items():
        lines += ["", f"{name}:"]
        lines += [f"  {key:<40} {_value(value)}" for key, value in extra.items()]
    checked = extra_targets(result["extras"])
    if checked:
        lines += ["", f"{'target on the extras':<34}{'value':>10}{'target':>10}  met"]
        lines += [f"{label:<34}{_value(value):>10}{_value(target):>10}  {'yes' if met else 'NO'}"
                  for label, value, target, met in checked]
    return "\n".join(lines)


def extra_targets(extras: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """`EXTRA_TARGETS` whose figure was measured (an extra may be skipped or not chosen)."""
    checked = []
    for label, extra, key, target, kind in EXTRA_TARGETS:
        value = extras.get(extra, {}).get(key)
        if isinstance(value, int | float):
            checked.append((label, float(value), float(target),
                            reaches(value, target, kind)))
    return checked


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
