"""Query and page encoding on CPU with the real-size architectures at random weights.

No weights exist offline, so ColSmol-256M (Idefics3 / SmolVLM-256M config) and ColQwen2-2B (Qwen2-VL-2B
config) are built from their published configs with random weights and the tiny models' offline
processors (character-level tokenizers: a query gets ~2x the tokens a real tokenizer gives, so query
times here are upper bounds), saved once under ``--workdir`` and loaded through :class:`ColPaliEncoder`,
the path users take. Speed does not depend on the weights' values; rankings from random weights are
compared between variants only (query embeddings and top-10 against the same page embeddings).

Per model and variant (fp32, bf16, int8 dynamic quantisation of the language tower, torch.compile):
load seconds and RSS, s/query at batch 1 (split into processor and model time), s/page, and the
query-cache hit time. CPU-seconds and wall are both reported (the machine is shared).

    nice python benchmarks/bench_encode.py --models colsmol-256m --out benchmarks/results/encode_cpu.json
    nice python benchmarks/bench_encode.py --models colqwen2-2b --variants bf16,int8 --pages 1 \\
        --out benchmarks/results/encode_cpu_colqwen2.json
    python benchmarks/bench_encode.py --tiny --out /tmp/encode_smoke.json          # smoke, tiny towers
"""
from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

import lazyllm_colpali  # noqa: E402,F401  (environment fixes before colpali_engine)
from lazyllm_colpali.models.encoder import ColPaliEncoder  # noqa: E402
from lazyllm_colpali.retrieve.maxsim import maxsim_reference  # noqa: E402

QUERIES = ['What was the total revenue in 2023?', 'pump maintenance interval for the cooling system',
           'Which table lists the safety thresholds?', 'diagram of the network topology',
           'installation steps for the kernel module', 'who signed the agreement', 'warranty period in months',
           'figure showing quarterly growth by region']


def _full_size_model(family: str, tiny: bool):
    """A colpali-engine model + processor of ``family`` with the published backbone config."""
    from lazyllm_colpali.models import tiny as tiny_models

    if family == 'colsmol-256m':
        from colpali_engine.models import ColIdefics3
        from transformers import Idefics3Config

        _, processor = tiny_models._colidefics3()
        tok = processor.tokenizer
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=512, patch_size=16)
        text = dict(model_type='llama', hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49280, rope_theta=100000.0,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, pad_token_id=tok.pad_token_id)
        if tiny:
            vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
            text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2)
        config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=4,
                                image_token_id=tok.convert_tokens_to_ids('<image>'), pad_token_id=tok.pad_token_id)
        model = ColIdefics3(config)
        tiny_models._randomise_projection(model.linear)
        return model, processor
    if family == 'colqwen2-2b':
        import colpali_engine.models as cm
        from transformers import Qwen2VLConfig

        processor = tiny_models._qwen_processor(cm.ColQwen2Processor)
        ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in tiny_models._QWEN_SPECIAL}
        from published_configs import qwen2vl_2b

        vision, text = qwen2vl_2b(tiny)
        vision.pop('in_channels')
        config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                               video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                               vision_end_token_id=ids['<|vision_end|>'], bos_token_id=ids['<|endoftext|>'],
                               eos_token_id=ids['<|im_end|>'], pad_token_id=ids['<|endoftext|>'])
        model = cm.ColQwen2(config)
        tiny_models._randomise_projection(model.custom_text_proj)
        return model, processor
    raise ValueError(f'unknown model {family!r}: colsmol-256m or colqwen2-2b')


def build_folder(family: str, workdir: Path, tiny: bool) -> Path:
    """Build once (bf16 weights on disk: half the bytes; loading in fp32 upcasts them) and reuse."""
    folder = workdir / (family + ('-tiny' if tiny else ''))
    if (folder / 'config.json').exists():
        return folder
    started = time.perf_counter()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)   # a 2B model never exists in fp32 during the build
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, processor = _full_size_model(family, tiny)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    print(f'{family}: built {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M params in '
          f'{time.perf_counter() - started:.0f} s -> {folder}', flush=True)
    del model
    gc.collect()
    return folder


def page_images(n: int, size=(1240, 1754)) -> List[Image.Image]:
    """A4 pages at 150 dpi with text lines and a box (the models only see pixels; content is irrelevant)."""
    pages = []
    for i in range(n):
        img = Image.new('RGB', size, 'white')
        draw = ImageDraw.Draw(img)
        for line in range(40):
            draw.text((100, 100 + 40 * line), f'Page {i} line {line}: quarterly revenue and pump maintenance', fill=0)
        draw.rectangle((200, 1300, 1000, 1600), outline=0, width=4)
        pages.append(img)
    return pages


def rss_gib() -> float:
    """Resident memory now (not the peak: variants run one after another in this process)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def clock(fn, repeats: int) -> Dict:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {'wall_s': statistics.median(walls), 'cpu_s': statistics.median(cpus)}


def run_variant(folder: Path, variant: str, args, pages: List[Image.Image], reference: Dict) -> Dict:
    dtype = 'float32' if variant in ('fp32', 'int8') else 'bfloat16'
    started = time.perf_counter()
    enc = ColPaliEncoder(str(folder), device='cpu', dtype=dtype, batch_size=1, query_batch_size=1,
                         quantize='int8' if variant == 'int8' else None, query_cache_size=0).load()
    if variant == 'compile':
        enc._model = torch.compile(enc._model, dynamic=True)
    load_s = time.perf_counter() - started
    row = {'variant': variant, 'dtype': dtype, 'load_s': load_s, 'rss_gib_after_load': rss_gib()}
    proc = enc.processor
    batch = proc.process_queries(QUERIES[:1])
    row['query_tokens'] = int(batch['input_ids'].shape[1])
    warm = clock(lambda: enc.encode_queries(QUERIES[:1]), 1)   # first call (compile for torch.compile)
    row['first_query_s'] = warm['wall_s']
    per_query = [clock(lambda q=q: enc.encode_queries([q]), 1) for q in QUERIES[:args.queries]]
    row['query_wall_s'] = statistics.median(r['wall_s'] for r in per_query)
    row['query_cpu_s'] = statistics.median(r['cpu_s'] for r in per_query)
    row['processor_s'] = clock(lambda: proc.process_queries(QUERIES[:1]), 3)['wall_s']
    with torch.inference_mode():
        row['model_forward_s'] = clock(lambda: enc.model(**batch), 3)['wall_s']
    if args.profile:   # where a query's seconds go, by operator (self CPU time)
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            enc.model(**batch)
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        row['profile_top_ops'] = [{'op': e.key, 'share': e.self_cpu_time_total / total, 'calls': e.count}
                                  for e in ops[:8]]
        print('    ' + ', '.join(f'{o["op"]} {o["share"]:.0%}' for o in row['profile_top_ops']), flush=True)
    batched = clock(lambda: enc._encode(QUERIES[:args.queries], proc.process_queries, args.queries), 1)
    row['query_batched_wall_s_per_query'] = batched['wall_s'] / args.queries
    embeddings = enc.encode_queries(QUERIES[:args.queries])
    if pages and variant in args.page_variants:
        enc.batch_size = 1
        timing = clock(lambda: enc.encode_images(pages[:1]), 1)
        row['page_wall_s'], row['page_cpu_s'] = timing['wall_s'], timing['cpu_s']
        page_emb = enc.encode_images(pages[:1])[0]
        row['page_tokens'] = len(page_emb)
        if 'page' in reference:
            ref = reference['page']
            row['page_emb_cos_vs_ref'] = float(torch.nn.functional.cosine_similarity(page_emb, ref, dim=1).mean())
        else:
            reference['page'] = page_emb
    if 'queries' in reference:
        ref_q = reference['queries']
        row['query_emb_cos_vs_ref'] = float(statistics.mean(
            float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean()) for a, b in zip(embeddings, ref_q)))
        bank = reference['bank']
        ref_top = maxsim_reference(ref_q, bank).topk(10, dim=1).indices
        top = maxsim_reference(embeddings, bank).topk(10, dim=1).indices
        row['top10_overlap_vs_ref'] = float(statistics.mean(
            len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(top, ref_top)))
    else:
        reference['queries'] = embeddings
        # A bank of 64 "pages" built from the model's own query-token space mixed with noise: the rankings
        # of different query variants against the same bank show whether the variant reorders results.
        g = torch.Generator().manual_seed(0)
        pool = torch.cat(embeddings)
        reference['bank'] = [torch.nn.functional.normalize(
            pool[torch.randint(len(pool), (60,), generator=g)] + 0.3 * torch.randn(60, pool.shape[1], generator=g),
            dim=1) for _ in range(64)]
    enc.query_cache_size = 256
    enc.encode_queries(QUERIES[:1])
    row['cached_query_s'] = clock(lambda: enc.encode_queries(QUERIES[:1]), 5)['wall_s']
    del enc
    gc.collect()
    print(f'  {variant:<8} load {load_s:5.1f} s  RSS {row["rss_gib_after_load"]:5.2f} GiB  query '
          f'{row["query_wall_s"]:.3f} s wall / {row["query_cpu_s"]:.3f} CPU-s ({row["query_tokens"]} tok; model '
          f'{row["model_forward_s"]:.3f} s, processor {row["processor_s"]:.4f} s)  page '
          f'{row.get("page_wall_s", float("nan")):.1f} s  cos {row.get("query_emb_cos_vs_ref", 1.0):.4f} '
          f'top10 {row.get("top10_overlap_vs_ref", 1.0):.2f}', flush=True)
    return row


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='colsmol-256m')
    parser.add_argument('--variants', default='fp32,bf16,int8', help='from fp32, bf16, int8, compile')
    parser.add_argument('--queries', type=int, default=6)
    parser.add_argument('--pages', type=int, default=1, help='pages to encode per variant (0: queries only)')
    parser.add_argument('--page-variants', default='fp32,bf16', help='variants that also time a page (int8 '
                                                                     'changes only the language tower)')
    parser.add_argument('--workdir', default='/tmp/lazyllm_colpali_encode')
    parser.add_argument('--tiny', action='store_true', help='shrunk towers (smoke test of the script)')
    parser.add_argument('--profile', action='store_true', help='operator profile of one query forward pass')
    parser.add_argument('--out', default='benchmarks/results/encode_cpu.json')
    args = parser.parse_args(argv)
    args.page_variants = args.page_variants.split(',')
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pages = page_images(args.pages)
    result = {'args': vars(args), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
              'cpu_capability': torch.backends.cpu.get_cpu_capability(), 'models': {}}
    for family in args.models.split(','):
        folder = build_folder(family, workdir, args.tiny)
        print(f'{family} ({torch.get_num_threads()} threads):', flush=True)
        reference: Dict = {}
        rows = result['models'][family] = []
        for variant in args.variants.split(','):   # saved after each: a later variant may run out of memory
            rows.append(run_variant(folder, variant, args, pages, reference))
            write_json(args.out, result, announce=False)
    print(f'JSON written to {args.out}')
    return result


if __name__ == '__main__':
    main()
