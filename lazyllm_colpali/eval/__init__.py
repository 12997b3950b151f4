"""Evaluation harness: datasets (own layout, BEIR/ViDoRe-style), ranx metrics, arm-by-arm comparison."""
from .dataset import DatasetError, EvalDataset, from_parts, load_dataset
from .harness import ALL_ARMS, DEFAULT_ARMS, ArmResult, EvalReport, run_eval
from .metrics import DEFAULT_METRICS, evaluate_run
from .report import format_table, write_chain_chart, write_chart, write_json
from .sample import build_sample

__all__ = ['ALL_ARMS', 'ArmResult', 'DEFAULT_ARMS', 'DEFAULT_METRICS', 'DatasetError', 'EvalDataset', 'EvalReport',
           'build_sample', 'evaluate_run', 'format_table', 'from_parts', 'load_dataset', 'run_eval',
           'write_chain_chart', 'write_chart', 'write_json']
