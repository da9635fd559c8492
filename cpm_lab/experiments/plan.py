"""Planning an ablation: budgets per preset, ``RunSpec`` (everything that determines a run's
result) and ``plan_runs`` (the list of runs of a sweep, no training)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from ..data.specs import parse_spec
from ..models.cpm import PRESETS
from ..train.phases import STRATEGIES, plan_phases
from ..utils import resolve_device

EXPERIMENTS = ("strategies", "stages", "normalisation")
#: What a sweep runs unless told otherwise (the normalisation contrast is asked for by name).
DEFAULT_EXPERIMENTS = ("strategies", "stages")
#: The contrast experiment: end-to-end training with and without intermediate supervision, under
#: the preset's own recipe ("preset") and with modern normalisation and/or an adaptive optimiser.
#: Each setting is a pair of overrides (CPMConfig fields, TrainConfig fields) applied on top of
#: the preset and of the sweep's own overrides. Adam runs at its usual lr 1e-3, cosine schedule.
NORMALISATION_SETTINGS: dict[str, tuple[dict, dict]] = {
    "preset": ({}, {}),
    "batchnorm": ({"batch_norm": True}, {}),
    "adam": ({}, {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine", "weight_decay": 0.0}),
    "batchnorm+adam": ({"batch_norm": True}, {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine",
                                              "weight_decay": 0.0}),
}
NORMALISATION_STRATEGIES = ("end_to_end", "no_intermediate")
#: PCK thresholds (fractions of the torso diagonal) evaluated for every stage of every run.
THRESHOLDS = (0.05, 0.1, 0.15, 0.2)
NORMALIZE = "torso"

#: Named budgets of a sweep: "quick" (a smoke test), "default" and "full".
BUDGETS = ("quick", "default", "full")
#: Budget per model preset and budget name: optimiser steps and batch size of EVERY run,
#: held-out images, seeds. A preset without a "full" entry uses its "default" for it.
#: "ablation", the default preset (measured 2026-12-03 on a 2-core CPU, data/results/README.md):
#: "default" = 500 steps a run, 5 seeds, strategies + stages in 9 min 51 s; "full" = the same
#: sweep at 3000 steps a run in 58 min, with higher accuracy and a stage curve that keeps rising
#: up to 5 stages. Both reproduce 8 of the 9 claims ``check_claims`` tests. "tiny" (BatchNorm,
#: Adam) is the earlier 15-minute sweep at 3 seeds; "paper" is for a GPU and real data.
ABLATION_BUDGETS: dict[str, dict[str, dict]] = {
    "ablation": {"default": dict(steps=500, batch_size=8, eval_size=256, seeds=(0, 1, 2, 3, 4)),
                 "full": dict(steps=3000, batch_size=8, eval_size=256, seeds=(0, 1, 2, 3, 4))},
    "tiny": {"default": dict(steps=250, batch_size=8, eval_size=256)},
    "small": {"default": dict(steps=2000, batch_size=16, eval_size=512)},
    "paper": {"default": dict(steps=100_000, batch_size=16, eval_size=None)},
}
#: Budget "quick", for every preset: one seed, stages 1..3, a few dozen steps (1-2 min on a CPU).
QUICK = dict(seeds=(0,), stages=(1, 2, 3), steps=60, batch_size=8, eval_size=64)
#: The preset of ``cpm-lab ablate`` and ``run_ablation`` unless told otherwise.
DEFAULT_PRESET = "ablation"


def budget_settings(preset: str, budget: str = "default") -> dict:
    """The sweep settings of a named budget (``BUDGETS``) for a model preset: steps, batch_size,
    eval_size and, where the budget fixes them, seeds and stages. Raises ValueError for an
    unknown budget."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    table = ABLATION_BUDGETS.get(preset, ABLATION_BUDGETS["small"])
    out = dict(table["default"])
    if budget == "full":
        out.update(table.get("full", {}))
    elif budget == "quick":
        out.update(QUICK)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One training run of the ablation: everything that determines its result.

    ``experiments`` lists the experiments the run belongs to (the first names its directory).
    ``setting`` names the ``NORMALISATION_SETTINGS`` entry whose overrides are already merged
    into ``train_overrides`` / ``model_overrides`` (extra ``TrainConfig`` / ``CPMConfig`` fields
    as sorted (name, value) pairs); "preset" = none.
    """

    experiments: tuple[str, ...]
    strategy: str
    num_stages: int
    seed: int
    preset: str
    data: str
    steps: int
    batch_size: int
    eval_size: int | None
    eval_seed: int
    device: str
    grad_every: int
    checkpoint_every: int
    train_overrides: tuple = ()
    model_overrides: tuple = ()
    setting: str = "preset"

    @property
    def run_id(self) -> str:
        setting = "" if self.setting == "preset" else f"{self.setting}-"
        return f"{self.experiments[0]}-{setting}{self.strategy}-s{self.num_stages}-seed{self.seed}"

    def settings(self) -> dict:
        """The settings a finished run must share with a request to be reused (JSON-able)."""
        d = asdict(self)
        # the label does not change the result (its overrides do, and they are kept)
        for k in ("experiments", "device", "checkpoint_every", "setting"):
            d.pop(k)
        d["train_overrides"] = [list(kv) for kv in self.train_overrides]
        d["model_overrides"] = [list(kv) for kv in self.model_overrides]
        return d


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------
def _as_int_tuple(values, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}") from None
    if not out:
        raise ValueError(f"{name} must not be empty")
    if any(v < minimum for v in out) or any(float(v) != float(w) for v, w in zip(out, values)):
        raise ValueError(f"{name} must be integers >= {minimum}, got {tuple(values)!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates: {out}")
    return out


def _normalisation_settings(names: Sequence[str] | None) -> tuple[str, ...]:
    """The settings of the normalisation experiment: "preset" (its baseline, always run) and
    ``names`` (default: all of ``NORMALISATION_SETTINGS``), in that table's order."""
    if names is None:
        return tuple(NORMALISATION_SETTINGS)
    names = (names,) if isinstance(names, str) else tuple(names)
    bad = [n for n in names if n not in NORMALISATION_SETTINGS]
    if bad:
        raise ValueError(f"unknown normalisation setting {bad[0]!r}; choose from {', '.join(NORMALISATION_SETTINGS)}")
    return tuple(n for n in NORMALISATION_SETTINGS if n == "preset" or n in names)


def plan_runs(preset: str = DEFAULT_PRESET, data: str = "synthetic", strategies: Sequence[str] | None = None,
              stages: Sequence[int] = (1, 2, 3, 4, 5, 6), seeds: Sequence[int] = (0, 1, 2),
              steps: int = 150, batch_size: int = 16, strategy_stages: int = 3,
              experiments: Sequence[str] = DEFAULT_EXPERIMENTS, eval_size: int | None = 256, eval_seed: int = 0,
              device: str = "auto", grad_every: int | None = None, checkpoint_every: int | None = None,
              finetune_fraction: float = 0.5, train_overrides: dict | None = None,
              model_overrides: dict | None = None,
              normalisation_settings: Sequence[str] | None = None) -> list[RunSpec]:
    """The list of runs of an ablation (no training); see ``run_ablation`` for the arguments.

    Runs are ordered seed by seed (so an interrupted sweep has complete seeds first) and, within
    a seed, longest first (``relative_cost``). Raises ValueError for bad arguments.
    """
    settings = _normalisation_settings(normalisation_settings)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    experiments = tuple(experiments)
    bad = [e for e in experiments if e not in EXPERIMENTS]
    if bad or not experiments:
        raise ValueError(f"experiments must be a non-empty subset of {EXPERIMENTS}, got {experiments!r}")
    strategies = tuple(STRATEGIES if strategies is None else
                       ((strategies,) if isinstance(strategies, str) else strategies))
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"unknown strategy {bad[0] if bad else ''!r}: strategies must be a non-empty "
                         f"subset of {STRATEGIES}")
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies has duplicates: {strategies}")
    stages = _as_int_tuple(stages, "stages", 1)
    seeds = _as_int_tuple(seeds, "seeds", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(strategy_stages, int) or strategy_stages < 1:
        raise ValueError(f"strategy_stages must be a positive integer, got {strategy_stages!r}")
    if eval_size is not None and (not isinstance(eval_size, int) or eval_size < 1):
        raise ValueError(f"eval_size must be a positive integer or None, got {eval_size!r}")
    if "strategies" in experiments or "normalisation" in experiments:
        for s in set(strategies if "strategies" in experiments else ()) | set(
                NORMALISATION_STRATEGIES if "normalisation" in experiments else ()):
            try:
                plan_phases(s, strategy_stages, steps, finetune_fraction)
            except ValueError as exc:
                raise ValueError(f"steps={steps} is too few for the strategies experiment: {exc}") from None
    grad_every = grad_every or max(1, steps // 10)
    checkpoint_every = checkpoint_every if checkpoint_every is not None else max(1, steps // 4)
    if grad_every < 1 or checkpoint_every < 0:
        raise ValueError(f"grad_every must be >= 1 and checkpoint_every >= 0, got {grad_every}, {checkpoint_every}")
    to = dict(train_overrides or {})
    if finetune_fraction != 0.5:
        to["finetune_fraction"] = finetune_fraction
    mo = dict(model_overrides or {})
    if "num_stages" in mo:
        raise ValueError("model_overrides may not set num_stages: use stages / strategy_stages")
    common = dict(preset=preset, data=data, steps=steps, batch_size=batch_size, eval_size=eval_size,
                  eval_seed=int(eval_seed), device=device, grad_every=int(grad_every),
                  checkpoint_every=int(checkpoint_every))

    def overrides(setting: str) -> dict:
        model, train = NORMALISATION_SETTINGS[setting]
        return dict(setting=setting, train_overrides=tuple(sorted({**to, **train}.items())),
                    model_overrides=tuple(sorted({**mo, **model}.items())))

    runs: list[RunSpec] = []
    for seed in seeds:
        wanted: dict[tuple[str, str, int], list[str]] = {}
        if "strategies" in experiments:
            for s in strategies:
                wanted.setdefault(("preset", s, strategy_stages), []).append("strategies")
        if "stages" in experiments:
            for t in stages:
                wanted.setdefault(("preset", "end_to_end", t), []).append("stages")
        if "normalisation" in experiments:
            for setting in settings:
                for s in NORMALISATION_STRATEGIES:
                    wanted.setdefault((setting, s, strategy_stages), []).append("normalisation")
        seed_runs = [RunSpec(experiments=tuple(exps), strategy=strategy, num_stages=t, seed=seed, **common,
                             **overrides(setting))
                     for (setting, strategy, t), exps in wanted.items()]
        runs += sorted(seed_runs, key=relative_cost, reverse=True)
    return runs


#: Compute of a strategy relative to end-to-end training of the same model (stage-wise phases
#: run and back-propagate through fewer stages; measured on the tiny preset).
_STRATEGY_COST = {"end_to_end": 1.0, "no_intermediate": 1.0, "stagewise": 0.55, "stagewise_finetune": 0.78}


def relative_cost(spec: RunSpec) -> float:
    """Rough training cost of a run in units of one stage (for scheduling: within a seed the
    longest runs start first, so parallel workers finish together)."""
    return (1.0 + spec.num_stages) * _STRATEGY_COST.get(spec.strategy, 1.0)


def ablation_plan(preset: str = DEFAULT_PRESET, data: str = "synthetic", strategies: Sequence[str] | None = None,
                  stages: Sequence[int] | None = None, seeds: Sequence[int] | None = None, steps: int | None = None,
                  *, budget: str = "default", batch_size: int | None = None, strategy_stages: int | None = None,
                  experiments: Sequence[str] = DEFAULT_EXPERIMENTS, eval_size: int | None | str = "auto",
                  eval_seed: int = 0, device: str = "auto", grad_every: int | None = None,
                  checkpoint_every: int | None = None, train_overrides: dict | None = None,
                  model_overrides: dict | None = None,
                  normalisation_settings: Sequence[str] | None = None) -> list[RunSpec]:
    """The runs ``run_ablation`` makes for the same arguments: what is not given comes from the
    preset's named ``budget`` (``budget_settings``); the strategies and
    normalisation experiments use the preset's number of stages unless ``strategy_stages`` says."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    quick = budget == "quick"
    budget = budget_settings(preset, budget)
    if eval_size == "auto":
        kind, _ = parse_spec(data)
        eval_size = budget["eval_size"] if kind == "synthetic" or quick else None
    if eval_size == "auto" or (eval_size is not None and not isinstance(eval_size, int)):
        raise ValueError(f"eval_size must be 'auto', None or a positive integer, got {eval_size!r}")
    dev = resolve_device(device)
    if strategy_stages is None:
        strategy_stages = PRESETS[preset].num_stages
    overrides = dict(train_overrides or {})
    return plan_runs(preset, data, strategies, budget.get("stages", (1, 2, 3, 4, 5, 6)) if stages is None else stages,
                     budget.get("seeds", (0, 1, 2)) if seeds is None else seeds,
                     budget["steps"] if steps is None else steps,
                     budget["batch_size"] if batch_size is None else batch_size, strategy_stages, experiments,
                     eval_size, eval_seed, str(dev) if device != "auto" else "auto", grad_every, checkpoint_every,
                     overrides.pop("finetune_fraction", 0.5), overrides, model_overrides, normalisation_settings)
