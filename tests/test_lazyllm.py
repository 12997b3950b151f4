"""LazyLLM integration: the embed contract, stock Document + Retriever with 'maxsim', and the
ColPaliDocument / ColPaliRetriever components inside pipeline and parallel flows."""
import base64
import io
import os

import pytest
from lazyllm import parallel, pipeline
from lazyllm.tools.rag import Document, Retriever
from lazyllm.tools.rag.doc_node import ImageDocNode
from PIL import Image

from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, ColPaliRetriever, PdfPageImageReader


@pytest.fixture(scope='module')
def embed(tiny_model_dir):
    return ColPaliEmbed(str(tiny_model_dir('colpali')), device='cpu', batch_size=2)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode()


def test_embed_follows_lazyllm_contract(embed):
    query = embed('quarterly revenue')
    assert isinstance(query, list) and isinstance(query[0], list) and len(query[0]) == 128
    pages = embed([_data_uri(Image.new('RGB', (300, 400), 'white'))], modality='image')
    assert len(pages) == 1 and len(pages[0]) > 500 and len(pages[0][0]) == 128


def test_stock_document_and_retriever_with_maxsim(embed, pdf_dir, tmp_path):
    doc = Document(str(pdf_dir), embed=embed, name='colpali_stock_doc')
    doc.add_reader('*.pdf', PdfPageImageReader(str(tmp_path / 'pages'), dpi=40))
    retriever = Retriever(doc, group_name='image', similarity='maxsim', topk=3)
    nodes = retriever('replace the filter')
    assert len(nodes) == 3 and all(isinstance(n, ImageDocNode) for n in nodes)
    assert {n.metadata['file_name'] for n in nodes} <= {'annual report.pdf', 'manual.pdf', 'memo.pdf'}
    assert all(os.path.isfile(n.image_path) for n in nodes)


@pytest.fixture(scope='module')
def colpali_doc(embed, pdf_dir, tmp_path_factory):
    db = str(tmp_path_factory.mktemp('lazy') / 'colpali.db')
    doc = ColPaliDocument(str(pdf_dir), embed=embed, db=db, dpi=40, progress=False)
    yield doc
    doc.close()


def test_colpali_retriever_returns_nodes_with_file_page_score_image(colpali_doc):
    nodes = ColPaliRetriever(colpali_doc, topk=4)('warranty')
    assert len(nodes) == 4
    for node in nodes:
        assert node.metadata['file_name'].endswith('.pdf') and node.metadata['page'] >= 1
        assert isinstance(node.similarity_score, float) and os.path.isfile(node.image_path)
    assert [n.similarity_score for n in nodes] == sorted((n.similarity_score for n in nodes), reverse=True)
    assert colpali_doc.last_report.added_pages == 6


def test_pipeline_with_formatter(colpali_doc):
    with pipeline() as ppl:
        ppl.retriever = ColPaliRetriever(colpali_doc, topk=2, output_format='dict')
        ppl.cite = lambda hits: '\n'.join(f'[{h["file_name"]} p.{h["page"]}] ({h["score"]:.2f})' for h in hits)
    text = ppl('pump installation')
    assert text.count('\n') == 1 and '.pdf p.' in text


def test_parallel_visual_and_text_arms(colpali_doc, pdf_dir):
    text_doc = Document(str(pdf_dir), name='colpali_text_arm')
    with pipeline() as ppl:
        with parallel().asdict as ppl.arms:
            ppl.arms.visual = ColPaliRetriever(colpali_doc, topk=2)
            ppl.arms.text = Retriever(text_doc, group_name='CoarseChunk', similarity='bm25', topk=1)
        ppl.merge = lambda arms: {'pages': [(n.metadata['file_name'], n.metadata['page']) for n in arms['visual']],
                                  'text': [n.get_text() for n in arms['text']]}
    out = ppl('Replace the filter every month')
    assert len(out['pages']) == 2 and 'filter' in out['text'][0].lower()


def test_start_builds_the_index_before_the_first_query(embed, pdf_dir, tmp_path):
    doc = ColPaliDocument(str(pdf_dir / 'nested'), embed=embed, db=str(tmp_path / 'c.db'), dpi=40, progress=False)
    ppl = pipeline(ColPaliRetriever(doc, topk=1))
    assert doc.last_report is None
    ppl.start()
    assert doc.last_report is not None and doc.last_report.added_pages == 1
    assert ppl('hiring')[0].metadata['file_name'] == 'memo.pdf'
    doc.close()
