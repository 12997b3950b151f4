"""GPU numbers in one run: exact MaxSim against the memory-bandwidth bound, and page / query encoding
throughput of the full-size architectures (bf16, random weights).

1. MaxSim: ``pages`` synthetic ColPali-shaped pages (1030 x 128 fp16) on the GPU; the bound is the token
   bytes over the read bandwidth measured in the same run (a full read of the same tensor, and a
   device-to-device copy). Paths: the library's ``maxsim_matmul(device='cuda')`` at several chunk sizes,
   for 1 query and for a batch of queries (per-query time).
   And the fused Triton kernel of ``lazyllm_colpali.retrieve.kernel_gpu`` (tiles of tokens x query tokens).
2. Encoding: ColSmol-256M (Idefics3 / SmolVLM-256M config) and ColQwen2-2B (Qwen2-VL-2B config) built
   from the published configs at random weights in bf16 (transformers' backbone + the 128-d projection,
   which is all the compute of colpali-engine's ColIdefics3 / ColQwen2), fed page-shaped inputs: 17 tiles of
   512 px (1088 image tokens) and a 64x48 patch grid (768 image tokens), plus 20-token queries.

Runs with torch + transformers only (no lazyllm, no colpali-engine: the device machine has neither).

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu_h200.json
    python benchmarks/bench_gpu.py --tiny --pages 200 --device cpu --out /tmp/gpu_smoke.json   # CPU smoke
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List

import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

ROOT = Path(__file__).resolve().parents[1]


def import_maxsim():
    """``lazyllm_colpali.retrieve.maxsim`` without the package ``__init__`` (which needs lazyllm)."""
    try:
        import lazyllm  # noqa: F401
        from lazyllm_colpali.retrieve import maxsim
        return maxsim
    except ImportError:
        pass
    for name, sub in (('lazyllm_colpali', ''), ('lazyllm_colpali.retrieve', 'retrieve'),
                      ('lazyllm_colpali.store', 'store')):
        module = types.ModuleType(name)
        module.__path__ = [str(ROOT / 'lazyllm_colpali' / sub)]
        sys.modules[name] = module
    log = types.ModuleType('lazyllm_colpali.logging')
    log.LOG = logging.getLogger('lazyllm_colpali')
    sys.modules['lazyllm_colpali.logging'] = log
    spec = importlib.util.spec_from_file_location('lazyllm_colpali.retrieve.maxsim',
                                                  ROOT / 'lazyllm_colpali' / 'retrieve' / 'maxsim.py')
    maxsim = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = maxsim
    spec.loader.exec_module(maxsim)
    return maxsim


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(fn: Callable, device: str, repeats: int = 5, warmup: int = 2) -> Dict:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {'median_s': statistics.median(times), 'min_s': min(times), 'repeats': repeats}


def maxsim_rows(args) -> List[Dict]:
    maxsim = import_maxsim()
    PackedMultiVectors = sys.modules['lazyllm_colpali.store.vector_file'].PackedMultiVectors
    device, n, length, dim = args.device, args.pages, args.tokens, 128
    g = torch.Generator(device=device).manual_seed(0)
    tokens = torch.empty(n * length, dim, dtype=torch.float16, device=device)
    for a in range(0, n * length, 1 << 24):   # fill in slices: randn of 26 GB at once needs 2x the memory
        block = torch.randn(min(1 << 24, n * length - a), dim, generator=g, device=device)
        tokens[a:a + len(block)] = torch.nn.functional.normalize(block, dim=1).half()
    offsets = torch.arange(0, n * length + 1, length, dtype=torch.int64)
    packed = PackedMultiVectors([str(i) for i in range(n)], tokens, offsets)
    queries = [torch.nn.functional.normalize(torch.randn(args.query_tokens, dim, device=device), dim=1)
               for _ in range(args.batch_queries)]
    token_bytes = tokens.numel() * 2
    rows = []
    read = timed(lambda: torch.amax(tokens), device)
    scratch = torch.empty_like(tokens[: min(len(tokens), 1 << 25)])
    copy = timed(lambda: scratch.copy_(tokens[: len(scratch)]), device)
    read_bw = token_bytes / read['median_s']
    copy_bw = 2 * scratch.numel() * 2 / copy['median_s']
    del scratch
    bound_s = token_bytes / max(read_bw, copy_bw)
    print(f'MaxSim: {n} pages x {length} x {dim} fp16 = {token_bytes / 1e9:.1f} GB on {device}; read '
          f'{read_bw / 1e12:.2f} TB/s, copy {copy_bw / 1e12:.2f} TB/s; bound {bound_s * 1e3:.2f} ms/pass', flush=True)
    reference = None
    for chunk in args.chunks:
        for n_q in (1, args.batch_queries):
            t = timed(lambda: maxsim.maxsim_matmul(queries[:n_q], packed, chunk_tokens=chunk, device=device), device,
                      repeats=args.repeats)
            scores = maxsim.maxsim_matmul(queries[:1], packed, chunk_tokens=chunk, device=device)
            if reference is None:
                reference = scores
            rows.append({'kind': 'maxsim', 'path': f'maxsim_matmul cuda fp16, chunk {chunk} tokens',
                         'pages': n, 'queries_per_pass': n_q, 'pass_s': t['median_s'],
                         's_per_query': t['median_s'] / n_q, 'bound_s': bound_s,
                         'x_bound': t['median_s'] / bound_s, 'read_tb_s': read_bw / 1e12, 'copy_tb_s': copy_bw / 1e12,
                         'max_abs_diff_vs_first': float((scores - reference).abs().max())})
            print(f'  chunk {chunk:>9} x{n_q:<3} queries: {t["median_s"] * 1e3:8.2f} ms/pass '
                  f'({rows[-1]["x_bound"]:.2f}x bound)', flush=True)
    try:
        kernel_gpu = importlib.import_module('lazyllm_colpali.retrieve.kernel_gpu')
        triton_ok = kernel_gpu.available(tokens)
    except Exception as exc:   # no triton: the matmul rows stand alone
        print(f'  triton kernel unavailable: {exc!r}', flush=True)
        triton_ok = False
    for block_t, block_q in ((64, 32), (128, 32), (64, 64)) if triton_ok else ():
        for n_q in (1, args.batch_queries):
            fn = lambda: kernel_gpu.maxsim_triton(queries[:n_q], tokens, offsets, block_t=block_t,  # noqa: E731
                                                  block_q=block_q)
            t = timed(fn, device, repeats=args.repeats)
            scores = kernel_gpu.maxsim_triton(queries[:1], tokens, offsets, block_t=block_t, block_q=block_q)
            rows.append({'kind': 'maxsim', 'path': f'triton fused fp16, tiles {block_t}x{block_q}', 'pages': n,
                         'queries_per_pass': n_q, 'pass_s': t['median_s'], 's_per_query': t['median_s'] / n_q,
                         'bound_s': bound_s, 'x_bound': t['median_s'] / bound_s, 'read_tb_s': read_bw / 1e12,
                         'copy_tb_s': copy_bw / 1e12,
                         'max_abs_diff_vs_first': float((scores - reference).abs().max())})
            print(f'  triton {block_t}x{block_q} x{n_q:<3} queries: {t["median_s"] * 1e3:8.2f} ms/pass '
                  f'({rows[-1]["x_bound"]:.2f}x bound, max diff {rows[-1]["max_abs_diff_vs_first"]:.4f})', flush=True)
    del tokens, packed
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
    return rows


# Published configs (SmolVLM-256M-Instruct, Qwen2-VL-2B-Instruct); the tiny variants keep the shapes of
# the inputs and shrink the towers so that the script can be smoke-tested on a CPU.
def idefics3_config(tiny: bool):
    from transformers import Idefics3Config

    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=512, patch_size=16)
    text = dict(model_type='llama', hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                num_attention_heads=9, num_key_value_heads=3, vocab_size=49280, rope_theta=100000.0,
                max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False)
    if tiny:
        vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
    return Idefics3Config(vision_config=vision, text_config=text, image_token_id=49190, scale_factor=4,
                          pad_token_id=2)


def qwen2vl_config(tiny: bool):
    from transformers import Qwen2VLConfig

    from published_configs import qwen2vl_2b

    vision, text = qwen2vl_2b(tiny)
    return Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=151655, video_token_id=151656,
                         vision_start_token_id=151652, vision_end_token_id=151653, pad_token_id=151643)


class Embedder(torch.nn.Module):
    """Backbone + 128-d projection + L2 norm: the compute of colpali-engine's ColIdefics3 / ColQwen2."""

    def __init__(self, backbone: torch.nn.Module, hidden: int):
        super().__init__()
        self.backbone = backbone
        self.proj = torch.nn.Linear(hidden, 128)

    def forward(self, **inputs) -> torch.Tensor:
        hidden = self.backbone(**inputs).last_hidden_state
        return torch.nn.functional.normalize(self.proj(hidden), dim=-1)


def page_inputs(family: str, batch: int, device: str, tiny: bool) -> Dict:
    text_tokens = 20
    if family == 'colsmol-256m':
        tiles, per_tile, size = 17, 64, 512   # 4x4 tiles of 512 px + a global view; 64 tokens each
        ids = torch.full((batch, tiles * per_tile + text_tokens), 100, dtype=torch.long)
        ids[:, :tiles * per_tile] = 49190
        return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                    pixel_values=torch.randn(batch, tiles, 3, size, size, device=device, dtype=torch.bfloat16),
                    pixel_attention_mask=torch.ones(batch, tiles, size, size, dtype=torch.bool, device=device))
    grid_h, grid_w = 64, 48                   # an A4-ish page at ColQwen2's 768-token cap
    n_image = grid_h * grid_w // 4
    ids = torch.full((batch, n_image + 2 + text_tokens), 100, dtype=torch.long)
    ids[:, 0], ids[:, n_image + 1] = 151652, 151653
    ids[:, 1:n_image + 1] = 151655
    mm_types = (ids == 151655).long()   # transformers 5 wants the image-token mask for M-RoPE
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                mm_token_type_ids=mm_types.to(device),
                pixel_values=torch.randn(batch * grid_h * grid_w, 3 * 2 * 14 * 14, device=device,
                                         dtype=torch.bfloat16),
                image_grid_thw=torch.tensor([[1, grid_h, grid_w]] * batch, device=device))


def query_inputs(batch: int, tokens: int, device: str) -> Dict:
    ids = torch.randint(200, 40000, (batch, tokens))
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device))


def encoder_rows(args) -> List[Dict]:
    from transformers import Idefics3Model, Qwen2VLModel

    rows = []
    for family in args.models:
        config = idefics3_config(args.tiny) if family == 'colsmol-256m' else qwen2vl_config(args.tiny)
        started = time.perf_counter()
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(args.device):
                cls = Idefics3Model if family == 'colsmol-256m' else Qwen2VLModel
                backbone = cls._from_config(config, attn_implementation='sdpa')
                hidden = config.text_config.hidden_size
                model = Embedder(backbone, hidden).eval()
        finally:
            torch.set_default_dtype(default)
        params = sum(p.numel() for p in model.parameters())
        print(f'{family}: {params / 1e6:.0f} M params, built in {time.perf_counter() - started:.1f} s', flush=True)
        for batch in args.page_batches:
            inputs = page_inputs(family, batch, args.device, args.tiny)
            with torch.inference_mode():
                if args.device.startswith('cuda'):
                    torch.cuda.reset_peak_memory_stats()
                t = timed(lambda: model(**inputs), args.device, repeats=args.repeats, warmup=1)
                out = model(**inputs)
            peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith('cuda') else None
            rows.append({'kind': 'encode_pages', 'model': family, 'dtype': 'bfloat16', 'params_m': params / 1e6,
                         'batch': batch, 'tokens_per_page': out.shape[1], 's_per_batch': t['median_s'],
                         'pages_per_s': batch / t['median_s'], 'peak_gib': peak, 'finite': bool(out.isfinite().all())})
            print(f'  pages batch {batch:>3}: {rows[-1]["pages_per_s"]:8.1f} pages/s, {out.shape[1]} tokens/page, '
                  f'peak {peak if peak is None else round(peak, 1)} GiB', flush=True)
            del inputs, out
        for batch in args.query_batches:
            inputs = query_inputs(batch, args.query_tokens, args.device)
            with torch.inference_mode():
                t = timed(lambda: model(**inputs), args.device, repeats=args.repeats, warmup=1)
            rows.append({'kind': 'encode_queries', 'model': family, 'dtype': 'bfloat16', 'batch': batch,
                         'query_tokens': args.query_tokens, 's_per_batch': t['median_s'],
                         'queries_per_s': batch / t['median_s'], 'ms_per_batch': t['median_s'] * 1e3})
            print(f'  queries batch {batch:>3}: {rows[-1]["queries_per_s"]:8.1f} queries/s '
                  f'({t["median_s"] * 1e3:.1f} ms/batch)', flush=True)
        del model, backbone
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--pages', type=int, default=100000, help='pages for MaxSim (1030 x 128 fp16 each)')
    parser.add_argument('--tokens', type=int, default=1030)
    parser.add_argument('--query-tokens', type=int, default=20)
    parser.add_argument('--batch-queries', type=int, default=32)
    parser.add_argument('--chunks', default=f'{1 << 16},{1 << 22},{1 << 24}', help='chunk sizes in tokens')
    parser.add_argument('--models', default='colsmol-256m,colqwen2-2b')
    parser.add_argument('--page-batches', default='1,8,32')
    parser.add_argument('--query-batches', default='1,64')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--tiny', action='store_true', help='shrunk towers (CPU smoke test of the script)')
    parser.add_argument('--skip', default='', help='comma list of parts to skip: maxsim, encode')
    parser.add_argument('--out', default='benchmarks/results/gpu.json')
    args = parser.parse_args(argv)
    args.chunks = [int(c) for c in args.chunks.split(',')]
    args.models = [m for m in args.models.split(',') if m]
    args.page_batches = [int(b) for b in args.page_batches.split(',')]
    args.query_batches = [int(b) for b in args.query_batches.split(',')]
    skip = set(args.skip.split(','))
    info = {'torch': torch.__version__, 'device': args.device}
    if args.device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name()
    try:
        import transformers
        info['transformers'] = transformers.__version__
    except ImportError:
        pass
    print(info, flush=True)
    result = {'args': vars(args), 'env': info, 'rows': []}

    def save():
        write_json(args.out, result, announce=False)

    for part, fn in (('maxsim', maxsim_rows), ('encode', encoder_rows)):
        if part in skip:
            continue
        try:
            result['rows'].extend(fn(args))
        except Exception as exc:   # keep what the other part measured; the error goes into the JSON
            result.setdefault('errors', []).append(f'{part}: {type(exc).__name__}: {exc}')
            print(f'{part} failed: {exc!r}', flush=True)
        save()
    print(f'JSON written to {args.out}')
    return result


if __name__ == '__main__':
    main()
