"""``cpm-lab``: headless entry points (also ``python -m cpm_lab.cli``).

Commands::

    cpm-lab train --preset tiny --data synthetic --out runs/tiny [--steps N] [--strategy S] ...
                  [--augment/--no-augment] [--cache/--no-cache]
    cpm-lab eval  --checkpoint runs/tiny/checkpoint.pt --data synthetic [--split S] [--out eval.csv]
    cpm-lab eval  --mean-pose --data lspet --split val [--out baseline.csv]
    cpm-lab eval  --checkpoint CKPT --data lsp --split test [--protocol lsp|gt-crop] [--joints labelled|visible]
    cpm-lab score --predictions LSP_prediction_model_LSP_6s.mat --data lsp --split test [--out score.csv]
    cpm-lab predict photo.jpg photos/ [--checkpoint tiny-lsp] [--box x0,y0,x1,y1] [--out runs/predict]
    cpm-lab export --onnx cpm.onnx --checkpoint tiny-lsp [--opset 17]   (cpm_lab.export; the onnx extra)
    cpm-lab import-caffe pose_iter_395000.caffemodel --out cpm_lsp_caffe.pt   (cpm_lab.caffe_import)
    cpm-lab validate --data lspet                        (every unreadable image and invalid annotation)
    cpm-lab ablate [--budget quick|default|full] [--out DIR] ...  (cpm_lab.cli.ablate, running cpm_lab.experiments)
    cpm-lab demo  [--out runs/demo]                      (cpm_lab.demo)

``train`` writes ``OUT/config.json``, ``OUT/history.csv`` (one row per step), ``OUT/checkpoint.pt``
and ``OUT/eval.csv`` (tidy per-stage/per-part metrics of the final model on the held-out ``test``
split of ``--data``, which uses a different seed from the training split).

Real data (``--data lspet``, ``lsp``, ``mpii``, ``coco``; see ``cpm_lab.data.specs``) is trained
with the paper's person-centred augmentation (``cpm_lab.data.Augment``: zoom 0.7-1.3, rotation
+-40 deg, horizontal flip with left/right relabelling, on the training device) and with decoded
crops cached in memory as uint8; synthetic data with neither (its generator already varies pose,
scale and rotation, and renders each item anew). ``--augment/--no-augment`` and
``--cache/--no-cache`` override either; ``config.json`` records both.

``eval`` prints the per-stage PCK table and a per-part table of the last stage. ``eval
--mean-pose`` scores ``MeanPoseBaseline`` (the mean training pose placed in each person box; fitted
on the ``train`` split of the same spec) exactly like a model, as one stage numbered 1.

Distributed: ``torchrun --nproc_per_node=N -m cpm_lab.cli train ...`` trains with DDP (NCCL on
GPUs, gloo on CPU); ``--batch-size`` is the GLOBAL batch, split evenly over the N processes; only
rank 0 writes files and prints.

Each command lives in its own module of this package (``train``, ``evaluate``, ``predict``,
``export``, ``import_caffe``, ``score``, ``ablate``, ``validate``). Adding a command: write
``add_arguments(parser)`` and ``run(args) -> int`` in a module, decorate ``run`` with
``@command("name", "one-line help", add_arguments)`` and import the module at the bottom of
this file.

Exit status and messages (``main``): every fault is ONE line on stderr, never a traceback (set
``CPM_LAB_DEBUG=1`` to see one), with the notes an exception carries (e.g. what a stopped
training kept and the command that resumes it) appended. A DataLoader worker's error is reported
by its own message, not the worker's traceback. Status 2: errors a user (or the machine) can
cause -- ``CLIError``, ``ValueError`` (bad data, bad checkpoints, refused resumes),
``FileNotFoundError`` and the other path errors, ``files.DiskFull`` and a full disk,
``files.FolderLocked``, ``train.TrainingDiverged``. Status 1: anything else, i.e. a bug (the
message says so). 128 + N: stopped by signal N (130 for Ctrl-C; a training run saves its
checkpoint first). 141: the reader of stdout went away (``| head``); nothing is printed.
"""
from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other busy processes,
# spinning threads make every parallel op wait for a descheduled peer (measured: a tiny-preset
# step 5-10x slower with 2 threads than with 1); sleeping costs microseconds when the CPU is idle.
# Takes effect only if torch is not imported yet; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROG = "cpm-lab"


class CLIError(Exception):
    """A user error on the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block and exit
        raise CLIError(f"{self.prog}: {message}")


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: The registry of subcommands, in the order they appear in ``--help``.
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering ``run(args) -> int`` as ``cpm-lab NAME``."""
    def register(run: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"cpm-lab command {name!r} is already registered")
        COMMANDS[name] = Command(name, help, add_arguments, run)
        return run
    return register


# ------------------------------------------------------------------------------------------------
# Helpers shared by the commands
# ------------------------------------------------------------------------------------------------
def float_list(text: str) -> list[float]:
    """argparse type: ``"0.8,1.0,1.2"`` -> a list of positive numbers."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.8,1.0,1.2; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive comma-separated numbers, got {text!r}")
    return values


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there; CLIError otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write to output directory {path!r}: {exc.strerror or exc}") from None
    return path


def is_main_process() -> bool:
    """False on the ranks > 0 of a torchrun job (only rank 0 writes files and prints)."""
    return int(os.environ.get("RANK", "0")) == 0


def format_pck_table(table, thresholds: Sequence[float] = (0.1, 0.2), title: str = "") -> str:
    """Stages as rows, PCK@thresholds as columns (``metrics.pck_table``, mean over all joints), as text."""
    from ..metrics import NORMALIZATION_LABELS, pck_table

    wide = pck_table(table, thresholds)
    norm = NORMALIZATION_LABELS[table.loc[table["metric"] == "pck", "normalize"].iloc[0]]
    lines = ([title] if title else []) + [f"PCK ({norm}-normalised; mean over {wide.attrs['count']} "
                                          f"{wide.attrs['joints']} joints)"]
    cols = list(wide.columns)
    lines.append("stage  " + "  ".join(f"{c:>18}" for c in cols))
    for stage, row in wide.iterrows():
        lines.append(f"{int(stage):>5}  " + "  ".join(f"{row[c]:>18.3f}" for c in cols))
    return "\n".join(lines)


def format_part_table(table, thresholds: Sequence[float] = (0.1, 0.2), stage: int | None = None,
                      title: str = "") -> str:
    """Parts as rows (the pooled "mean" last) and PCK@thresholds of one stage (default: the last)
    as columns, plus ``n`` (``metrics.part_table``), as text."""
    from ..metrics import NORMALIZATION_LABELS, part_table

    wide = part_table(table, thresholds, stage)
    lines = ([title] if title else []) + [f"per part, stage {wide.attrs['stage']} (PCK, "
                                          f"{NORMALIZATION_LABELS[wide.attrs['normalize']]}-normalised, "
                                          f"{wide.attrs['joints']} joints)"]
    cols = [c for c in wide.columns if c != "n"]
    lines.append(f"{'part':<10}" + "".join(f"{c:>10}" for c in cols) + f"{'n':>8}")
    for part, row in wide.iterrows():
        lines.append(f"{part:<10}" + "".join(f"{row[c]:>10.3f}" for c in cols) + f"{int(row['n']):>8}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog=PROG, description="Convolutional Pose Machines: train, evaluate, explore.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(exc: BaseException) -> str:
    """An exception's message and notes as one line. For an exception re-raised from a DataLoader
    worker (whose message is the worker's whole traceback) only the original message is kept."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        found = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(type(exc).__name__)}: ", text, re.M))
        if found:
            text = text[found[-1].end():]
    parts = [" ".join(p.split()) for p in (text, *getattr(exc, "__notes__", ()))]
    return "; ".join(p for p in parts if p) or type(exc).__name__


def _is_user_error(exc: BaseException) -> bool:
    """True for faults a user or the machine causes (exit 2), False for bugs (exit 1)."""
    from ..files import DiskFull, FolderLocked

    kinds = (CLIError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
             DiskFull, FolderLocked)
    interrupt = sys.modules.get("cpm_lab.train.interrupt")  # imported by whatever raised TrainingDiverged
    if interrupt is not None:
        kinds += (interrupt.TrainingDiverged,)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return isinstance(exc, kinds) or full


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cpm-lab``; returns the exit status (see the module docstring)."""
    parser = build_parser()
    debug = bool(os.environ.get("CPM_LAB_DEBUG"))
    if not debug:  # warnings as one line each, like errors, not file:line plus a source line
        warnings.formatwarning = lambda message, category, *_, **__: f"{PROG}: warning: {message}\n"
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            raise CLIError(f"{PROG}: choose a command: {', '.join(COMMANDS)} (see {PROG} --help)")
        args._argv = argv
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the handlers below, not at exit
        return status
    except BrokenPipeError:  # e.g. `cpm-lab eval ... | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 141
    except KeyboardInterrupt as exc:
        print(f"{PROG}: {_one_line(exc) if str(exc) else 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 130))
    except Exception as exc:
        if debug:
            raise
        msg = _one_line(exc)
        if _is_user_error(exc):
            print(msg if msg.startswith(PROG) else f"{PROG}: error: {msg}", file=sys.stderr)
            return 2
        print(f"{PROG}: error: {type(exc).__name__}: {msg} (an internal error: please report it; set "
              f"CPM_LAB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


# The commands register themselves on import; ``--help`` lists them in this order.
from . import ablate as _ablate  # noqa: E402,F401
from . import evaluate as _evaluate  # noqa: E402,F401
from . import export as _export  # noqa: E402,F401
from . import import_caffe as _import_caffe  # noqa: E402,F401
from . import predict as _predict  # noqa: E402,F401
from . import score as _score  # noqa: E402,F401
from . import train as _train  # noqa: E402,F401
from . import validate as _validate  # noqa: E402,F401

_HELP_ORDER = ("train", "eval", "predict", "validate", "score", "export", "import-caffe", "demo", "ablate")
for _name in sorted(COMMANDS, key=lambda n: _HELP_ORDER.index(n) if n in _HELP_ORDER else len(_HELP_ORDER)):
    COMMANDS[_name] = COMMANDS.pop(_name)
