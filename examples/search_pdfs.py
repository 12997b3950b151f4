"""Index a folder of PDFs into Milvus Lite and search it, as LazyLLM components.

    python examples/search_pdfs.py ./pdfs "what was the revenue in 2023?" --model ./models/colqwen2-v1.0
    python examples/search_pdfs.py ../shared/corpus/real "late interaction" --model tiny:colqwen2   # offline
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: pipelines/ is beside us

import lazyllm_colpali  # noqa: F401,E402  (registers the plugin and fixes the environment first)
from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, ColPaliError  # noqa: E402
from pipelines.visual_rag import build_visual_search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('folder')
    parser.add_argument('query')
    parser.add_argument('--model', default=None)
    parser.add_argument('--db', default='./colpali.db')
    args = parser.parse_args()
    doc = ColPaliDocument(args.folder, embed=ColPaliEmbed(args.model), db=args.db)
    try:
        print(build_visual_search(doc, topk=5)(args.query))
    except ColPaliError as e:
        raise SystemExit(f'error: {e}')
    finally:
        doc.close()


if __name__ == '__main__':
    main()
