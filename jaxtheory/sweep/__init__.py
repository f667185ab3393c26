"""Sweeps: grids of seeds x widths x hyperparameters trained in one program per width bucket."""

from jaxtheory.sweep.engine import (STRATEGIES, Plan, RunGroup, Sweep, SweepResult, choose_chunk,
                                    compile_ahead, execute, initial_params, plan, run)
from jaxtheory.sweep.grid import buckets, expand, normalize, padded_flops_ratio
from jaxtheory.sweep.results import load, save, to_dataset, to_grid
from jaxtheory.sweep.checkpoint import CheckpointError
from jaxtheory.sweep.outdir import FolderBusyError, OutputError
from jaxtheory.sweep.compose import execute_over, run_over

