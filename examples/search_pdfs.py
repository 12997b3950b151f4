"""Index a folder of PDFs into Milvus Lite and search it, as LazyLLM components.

    python examples/search_pdfs.py ./pdfs "what was the revenue in 2023?" --model ./models/colqwen2-v1.0
    python examples/search_pdfs.py ../shared/corpus/real "late interaction" --model tiny:colqwen2   # offline
"""
import argparse

from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, ColPaliError
from lazyllm_colpali.pipelines import build_visual_search


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
