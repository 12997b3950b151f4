"""Per-thread rates of the SIMD MaxSim kernel's variants (retrieve/maxsim_simd.c), against the numba kernel.

One thread each, thread CPU-seconds: (1) pages that fit in cache (100 pages x 120 tokens), so the rate is the
inner loop's: dot-product instructions retired per second and GOP/s (2 x query tokens x page tokens x dim);
(2) fp16 pages streamed from memory (1k ColPali-shaped pages): the SIMD fp32 FMA variants against the numba
kernel on the same tokens, the comparison that keeps fp16 on numba.

    heavy python benchmarks/probe_simd.py --out benchmarks/results/probe_simd.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probe_gemm import cpu_time  # noqa: E402
from report_io import write_json  # noqa: E402

from lazyllm_colpali.retrieve import kernel, kernel_simd  # noqa: E402
from lazyllm_colpali.retrieve.compression import Int8Tokens  # noqa: E402

DIM = 128


def thread_ms(score, repeats: int) -> float:
    """Thread CPU-milliseconds of one call (probe_gemm's measure: the lower quartile of ``repeats``)."""
    return cpu_time(score, repeats) * 1000


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--query-tokens', type=int, default=24)
    parser.add_argument('--out', default='benchmarks/results/probe_simd.json')
    args = parser.parse_args(argv)
    if not kernel_simd.variants():
        raise SystemExit(f'the SIMD kernel is not built here: {kernel_simd.unavailable_reason()}')
    torch.manual_seed(0)
    load = os.getloadavg()
    print(f'load average {load[0]:.2f}; variants: '
          f'{", ".join(kernel_simd.VARIANT_NAMES[v] for v in sorted(kernel_simd.variants()))}')
    q = [torch.randn(args.query_tokens, DIM)]
    rows = []
    n, length = 100, 120
    tokens = torch.randn(n * length, DIM).half()
    offsets = torch.arange(n + 1) * length
    layouts = {kernel_simd.INT8: Int8Tokens.encode(tokens), kernel_simd.BF16: tokens.bfloat16(),
               kernel_simd.FP32_AVX512: tokens, kernel_simd.FP32_AVX2: tokens}
    groups = -(-args.query_tokens // kernel_simd.GROUP)
    for variant in sorted(kernel_simd.variants()):
        ms = thread_ms(lambda: kernel_simd.maxsim_simd(q, layouts[variant], offsets, variant=variant, threads=1), 50)
        per_instruction = {kernel_simd.INT8: 4, kernel_simd.BF16: 2}.get(variant, 1)
        instructions = n * length * groups * DIM // per_instruction
        rows.append({'probe': 'in cache', 'path': kernel_simd.VARIANT_NAMES[variant], 'thread_ms': ms,
                     'g_instructions_per_s': instructions / ms / 1e6,
                     'gop_per_s': 2 * n * length * args.query_tokens * DIM / ms / 1e6})
    n, length = 1000, 1030
    tokens = torch.randn(n * length, DIM).half()
    offsets = torch.arange(n + 1) * length
    for fp32 in sorted({kernel_simd.FP32_AVX2, kernel_simd.FP32_AVX512} & kernel_simd.variants()):
        rows.append({'probe': 'fp16 from memory', 'path': f'SIMD {kernel_simd.VARIANT_NAMES[fp32]}',
                     'thread_ms': thread_ms(lambda: kernel_simd.maxsim_simd(q, tokens, offsets, variant=fp32,
                                                                            threads=1), 5)})
    if kernel.available():
        kernel.numba.set_num_threads(1)   # its one worker is the calling thread: thread time counts it
        rows.append({'probe': 'fp16 from memory', 'path': 'numba fused kernel',
                     'thread_ms': thread_ms(lambda: kernel.maxsim_fused(q, tokens, offsets), 5)})
    for row in rows:
        row.setdefault('gop_per_s', 2 * n * 1030 * args.query_tokens * DIM / row['thread_ms'] / 1e6)
        rate = f'  {row["g_instructions_per_s"]:.2f} G instructions/s' if 'g_instructions_per_s' in row else ''
        print(f'{row["probe"]:<18} {row["path"]:<36} {row["thread_ms"]:8.2f} ms  {row["gop_per_s"]:6.1f} GOP/s{rate}')
    result = {'load_avg_at_start': load, 'load_avg_at_end': os.getloadavg(), 'query_tokens': args.query_tokens,
              'rows': rows}
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
