"""The RTX 4090 comparison after calibration, and which fitted parameter moves it.

There are no RTX 4090 kernel measurements, so the calibrated device is the documented
transfer: fit the A100 on the Vidur tables (held-out GEMM MAPE in the output), then put the
fitted efficiencies on the RTX 4090's datasheet figures (`infersim calibrate transfer`).
Then the end-to-end comparison of `e2e_rtx4090.py` with that device file, and an ablation
that applies one fitted parameter at a time to the catalog RTX 4090.

    python benchmarks/e2e_rtx4090_calibrated.py
"""

from __future__ import annotations

import subprocess
import sys

import yaml
from _common import DATA, RESULTS, require, write
from e2e_rtx4090 import mean_errors

from infersim.hardware import get_device

OUT = RESULTS / "e2e_rtx4090_calibrated"


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "from infersim.cli import main; main()", *args],
                   check=True, capture_output=True, text=True)


def main() -> None:
    require(DATA / "kernels" / "compute" / "a100")
    OUT.mkdir(parents=True, exist_ok=True)
    profile = OUT / "a100-profile.csv"  # 11 MB, not kept in git (regenerated here)
    cli("calibrate", "import-tables", str(DATA / "kernels" / "compute" / "a100"), "--out",
        str(profile))
    cli("calibrate", "fit", "--profile", str(profile), "--base", "a100-80gb-sxm", "--out",
        str(OUT / "a100-calibrated.yaml"))
    cli("calibrate", "transfer", "--device-file", str(OUT / "a100-calibrated.yaml"), "--base",
        "rtx-4090", "--out", str(OUT / "rtx-4090-from-a100.yaml"))
    transferred = yaml.safe_load((OUT / "rtx-4090-from-a100.yaml").read_text())
    rows = [("catalog rtx-4090 (default efficiencies)", mean_errors()),
            ("all fitted A100 parameters (transfer)",
             mean_errors(str(OUT / "rtx-4090-from-a100.yaml")))]
    base = get_device("rtx-4090").model_dump(mode="json")
    for name, quantity in transferred["efficiency"].items():
        single = {**base, "name": f"rtx-4090-{name.replace('_', '-')}",
                  "efficiency": {name: quantity}}
        path = OUT / f"only-{name}.yaml"
        path.write_text(yaml.safe_dump(single, sort_keys=False))
        rows.append((f"only {name} = {quantity['value']:g}", mean_errors(str(path))))
        path.unlink()
    lines = ["# RTX 4090 end to end, before and after calibration", "",
             "`python benchmarks/e2e_rtx4090_calibrated.py` (A100 fit on the Vidur tables, "
             "transferred to the RTX 4090 datasheet; device files in "
             "benchmarks/results/e2e_rtx4090_calibrated/)", "",
             "| cost model | mean TTFT error | mean TPOT error | mean E2E error |",
             "|---|---:|---:|---:|"]
    lines += [f"| {label} | {e['ttft']:+.1%} | {e['tpot']:+.1%} | {e['e2el']:+.1%} |"
              for label, e in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    print(f"written to {write('e2e_rtx4090_calibrated.md', text)}")


if __name__ == "__main__":
    main()
