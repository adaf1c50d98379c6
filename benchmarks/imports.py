"""What starting weightzoo costs, against ``import torch`` measured in the same run.

Each command runs in a fresh interpreter (``python -c ...``), several times, and the median wall
time is reported with its ratio to ``python -c "import torch"``. The target (issue 11): ``import
weightzoo``, ``import weightzoo.metanet`` and ``weightzoo zoo info PATH`` each at most 1.2x
``import torch``.

    python benchmarks/imports.py [--quick]

Prints a table and, last, one JSON line (``ratio_<name>`` and ``seconds_<name>`` per command).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import timed

TARGET = 1.2


def commands(zoo: Path) -> dict[str, list[str]]:
    py = [sys.executable, "-c"]
    return {
        "import_torch": [*py, "import torch"],
        "import_weightzoo": [*py, "import weightzoo"],
        "import_weightzoo_metanet": [*py, "import weightzoo.metanet"],
        "zoo_info": [sys.executable, "-m", "weightzoo", "zoo", "info", str(zoo)],
        "import_torch_geometric": [*py, "import torch_geometric"],  # what the metanet import used to pay for
    }


def make_zoo(path: Path) -> None:
    """A small built zoo to run ``zoo info`` on."""
    subprocess.run([sys.executable, "-m", "weightzoo", "zoo", "build", "tiny-mnist1d-mlp", "--out", str(path), "-q"],
                   check=True, capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per command instead of 9")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Path(tmp) / "zoo.zarr"
        make_zoo(zoo)
        seconds = {
            name: timed(lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True), repeats, warmup=True)
            for name, cmd in commands(zoo).items()
        }
    base = seconds["import_torch"]
    print(f"fresh interpreters, median of {repeats} runs each, python {sys.version.split()[0]}")
    print(f"{'command':<28}{'seconds':>9}{'x torch':>9}")
    for name, s in seconds.items():
        print(f"{name:<28}{s:>9.3f}{s / base:>9.2f}")
    checked = ("import_weightzoo", "import_weightzoo_metanet", "zoo_info")
    result = {f"seconds_{k}": round(v, 4) for k, v in seconds.items()}
    result |= {f"ratio_{k}": round(seconds[k] / base, 3) for k in checked}
    result["targets_met"] = all(seconds[k] / base <= TARGET for k in checked)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
