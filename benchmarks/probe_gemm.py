"""The skinny GEMM of MaxSim, op by op: which torch formulation uses this CPU's matrix units, and how fast.

One query (``--query-tokens`` x 128) against tiles of page tokens, on one thread, timed in thread CPU-seconds
(the lower quartile of repeats: robust on a shared machine). Per tile size: bf16 ``torch.mm``, fp32 mm,
``torch._int_mm`` (int8), oneDNN's fused ``qlinear_pointwise`` (int8 with per-column scales inside the GEMM,
on a prepacked tile) and ``_weight_int8pack_mm`` (int8 weights, float activations), each as GFLOP (or GOP)
per CPU-second, on a tile already in cache ("hot") and streamed from memory through a 512 MB buffer ("cold");
then the side costs of the tile loop: the per-page max along the contiguous or the middle axis,
``segment_reduce`` vs numpy's ``maximum.reduceat`` (variable page lengths), the int8 path's column scaling,
fp16 -> bf16 casts, and prepacking a tile for qlinear.

    heavy python benchmarks/probe_gemm.py --out benchmarks/results/probe_gemm.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402

DIM = 128


def cpu_time(fn: Callable, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return sorted(times)[len(times) // 4]


def cold_time(op: Callable, pool: torch.Tensor, tile: int, repeats: int = 3) -> float:
    """Seconds per tile when each tile comes from memory: walk the pool tile by tile."""
    n = len(pool) // tile
    best = float('inf')
    for _ in range(repeats):
        start = time.thread_time()
        for i in range(n):
            op(pool[i * tile:(i + 1) * tile])
        best = min(best, (time.thread_time() - start) / n)
    return best


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tiles', default='4120,16480,65920', help='page tokens per tile (4, 16, 64 pages)')
    parser.add_argument('--query-tokens', type=int, default=20)
    parser.add_argument('--out', default='benchmarks/results/probe_gemm.json')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    m = args.query_tokens
    q = torch.randn(m, DIM, generator=g)
    qb, qi = q.bfloat16(), torch.randint(-127, 128, (m, DIM), dtype=torch.int8, generator=g)
    qu = (qi.int() + 128).to(torch.uint8)
    pool_rows = (512 << 20) // (DIM * 2)
    pool_bf16 = torch.randn(pool_rows, DIM, generator=g).bfloat16()
    pool_int8 = torch.randint(-127, 128, (pool_rows, DIM), dtype=torch.int8, generator=g)
    result = {'args': vars(args), 'load_avg_at_start': os.getloadavg(), 'torch': torch.__version__, 'tiles': []}
    for tile in (int(t) for t in args.tiles.split(',')):
        flop = 2 * m * DIM * tile
        p = torch.randn(tile, DIM, generator=g)
        pb, pi = p.bfloat16(), torch.randint(-127, 128, (tile, DIM), dtype=torch.int8, generator=g)
        scales = torch.rand(tile, generator=g)
        row = {'tile_tokens': tile}
        row['fp32_mm'] = flop / cpu_time(lambda: q @ p.T) / 1e9
        row['bf16_mm_hot'] = flop / cpu_time(lambda: torch.mm(qb, pb.T)) / 1e9
        row['bf16_mm_cold'] = flop / cold_time(lambda t: torch.mm(qb, t.T), pool_bf16, tile) / 1e9
        row['int8_int_mm_hot'] = flop / cpu_time(lambda: torch._int_mm(qi, pi.T)) / 1e9
        row['int8_int_mm_cold'] = flop / cold_time(lambda t: torch._int_mm(qi, t.T), pool_int8, tile) / 1e9
        row['read_cold_GBps'] = tile * DIM * 2 / cold_time(lambda t: t.view(torch.int64).max(), pool_bf16, tile) / 1e9
        try:
            packed = torch.ops.onednn.qlinear_prepack(pi, [m, DIM])
            zero = torch.zeros(tile, dtype=torch.int64)
            row['int8_qlinear_fused_scale_hot'] = flop / cpu_time(lambda: torch.ops.onednn.qlinear_pointwise(
                qu, 1.0, 128, packed, scales, zero, None, 1.0, 0, torch.float32, 'none', [], '')) / 1e9
            row['qlinear_prepack_ms'] = cpu_time(lambda: torch.ops.onednn.qlinear_prepack(pi, [m, DIM]), 5) * 1e3
        except (AttributeError, RuntimeError) as e:
            row['qlinear'] = f'unavailable: {e}'
        row['weight_int8pack_mm_bf16'] = flop / cpu_time(
            lambda: torch.ops.aten._weight_int8pack_mm(qb, pi, scales.bfloat16()), 5) / 1e9
        sims_bf16 = torch.mm(qb, pb.T)
        sims = torch._int_mm(qi, pi.T)
        scaled = sims * scales
        mm_s = flop / row['bf16_mm_hot'] / 1e9
        int_s = flop / row['int8_int_mm_hot'] / 1e9
        pages = tile // 1030
        row['amax_last_axis_vs_bf16_mm'] = cpu_time(lambda: sims_bf16.view(m, pages, -1).amax(2)) / mm_s
        row['int8_scale_columns_vs_int_mm'] = cpu_time(lambda: sims * scales) / int_s
        row['amax_last_axis_us'] = cpu_time(lambda: scaled.view(m, pages, -1).amax(2)) * 1e6
        transposed = scaled.T.contiguous()
        row['amax_middle_axis_us'] = cpu_time(lambda: transposed.view(pages, -1, m).amax(1)) * 1e6
        lengths = torch.full((pages,), tile // pages)
        row['segment_reduce_us'] = cpu_time(lambda: torch.segment_reduce(
            scaled, 'max', axis=1, lengths=lengths.expand(m, -1)), 5) * 1e6
        starts = np.arange(0, tile, tile // pages)
        values = scaled.numpy()
        row['numpy_reduceat_us'] = cpu_time(lambda: np.maximum.reduceat(values, starts, axis=1)) * 1e6
        half = p.half()
        row['cast_fp16_to_bf16_GBps'] = tile * DIM * 2 / cpu_time(lambda: half.bfloat16()) / 1e9
        row['cast_fp16_fp32_bf16_GBps'] = tile * DIM * 2 / cpu_time(lambda: half.float().bfloat16()) / 1e9
        result['tiles'].append(row)
        print(' '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()), flush=True)
    result['load_avg_at_end'] = os.getloadavg()
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
