"""Run real kernels, store profiles, fit cost-model parameters, report held-out error.

    profile = run_profile(get_model("llama-3.2-1b"), "local-cpu")        # time kernels
    profile = import_tables("../shared/data/kernels")                     # or import tables
    result = fit_device(profile, base_device, "profile.csv")              # fit, split
    result.write("device.yaml")                                           # grade C file
    report("profile.csv", load_device_file("device.yaml")).summary        # held-out MAPE
    replay("out/steps.csv", load_device_file("device.yaml")).summary      # real steps

PyTorch (the ``calibrate`` extra) is imported only by the runners that need it."""

from infersim.calibration.devicefile import device_yaml, resolve_base, write_device
from infersim.calibration.fit import FitResult, fit_device, transfer
from infersim.calibration.localcpu import local_cpu_device
from infersim.calibration.predict import Split, evaluate, make_split, predict, summarize
from infersim.calibration.profile import COLUMNS, read_profile, write_profile
from infersim.calibration.replay import ReplayResult, replay
from infersim.calibration.report import CalibrationReport, plot_report, report, write_report
from infersim.calibration.runners import RUNNERS, MissingExtraError, run_profile
from infersim.calibration.tables import import_tables

__all__ = [
    "COLUMNS",
    "RUNNERS",
    "CalibrationReport",
    "FitResult",
    "MissingExtraError",
    "ReplayResult",
    "Split",
    "device_yaml",
    "evaluate",
    "fit_device",
    "import_tables",
    "local_cpu_device",
    "make_split",
    "plot_report",
    "predict",
    "read_profile",
    "replay",
    "report",
    "resolve_base",
    "run_profile",
    "summarize",
    "transfer",
    "write_device",
    "write_profile",
    "write_report",
]
