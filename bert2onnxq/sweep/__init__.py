"""sweep = many plans over one export: `cells` says which conversions a sweep makes (from the
methods registry), `run` converts, validates and records them, `execute` says where they run."""

from ..methods import Grid
from ..methods.qbert import bit_choices_around as qbert_choices
from ..onnx_io import check_writable, file_bytes
from .cells import Cell, canonical, check_bits, check_methods, make_cells, parse_setting
from .run import (
                  CELL_VERSION,
                  Setup,
                  cell_path,
                  finished,
                  measure,
                  prepare_fp32,
                  run_cell,
                  run_sweep,
                  summarize,
)

__all__ = ["CELL_VERSION", "Cell", "Grid", "Setup", "canonical", "cell_path", "check_bits", "check_methods",
           "check_writable", "file_bytes", "finished", "make_cells", "measure", "parse_setting", "prepare_fp32",
           "qbert_choices", "run_cell", "run_sweep", "summarize"]
