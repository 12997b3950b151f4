"""LazyLLM integration: the embed contract, stock Document + Retriever with 'maxsim' (map store and the
``colpali_milvus`` store), the ColPaliDocument / ColPaliRetriever components inside pipeline and parallel
flows, LazyLLM's own fusion, the one arm contract, and no side effects of importing the package."""
import base64
import io
import os
import subprocess
import sys

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
    with pipeline() as ppl:   # 'dict' as lazyllm.Retriever: node.to_dict(), file/page/score in metadata
        ppl.retriever = ColPaliRetriever(colpali_doc, topk=2, output_format='dict')
        ppl.cite = lambda hits: '\n'.join(f'[{h["metadata"]["file_name"]} p.{h["metadata"]["page"]}] '
                                          f'({h["metadata"]["score"]:.2f})' for h in hits)
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


def test_output_formats_follow_lazyllm_vocabulary(colpali_doc):
    with pytest.raises(ValueError, match="'content' or 'dict'"):
        ColPaliRetriever(colpali_doc, output_format='hits')
    images = ColPaliRetriever(colpali_doc, topk=2, output_format='content')('warranty')
    assert len(images) == 2 and all(isinstance(i, Image.Image) for i in images)   # as ImageDocNode.get_content()
    hits = ColPaliRetriever(colpali_doc, topk=2).search('warranty', {'file': 'manual.pdf'})
    assert [h.file_name for h in hits] == ['manual.pdf', 'manual.pdf'] and hits[0].score >= hits[1].score


def _colpali_milvus_doc(embed, pdf_dir, tmp_path, name):
    doc = Document(str(pdf_dir), embed={'colpali': embed}, name=name,
                   store_conf={'type': 'colpali_milvus', 'kwargs': {'uri': str(tmp_path / 'db' / 'pages.db')}})
    doc.add_reader('*.pdf', PdfPageImageReader(str(tmp_path / 'pages'), dpi=40))
    return doc


def test_stock_document_in_colpali_milvus_store_retrieves_with_exact_maxsim(embed, pdf_dir, tmp_path):
    import lazyllm
    import torch

    from lazyllm_colpali import ColPaliMilvusStore, maxsim_reference

    assert lazyllm.store.colpali_milvus is ColPaliMilvusStore   # found the way LazyLLM finds any store
    doc = _colpali_milvus_doc(embed, pdf_dir, tmp_path, 'colpali_milvus_doc')
    retriever = Retriever(doc, 'image', similarity='maxsim', topk=6)
    query = 'replace the filter every month'
    nodes = retriever(query)
    assert len(nodes) == 6 and all(isinstance(n, ImageDocNode) for n in nodes)
    # the rows are in Milvus (Lite file) and the multi-vectors beside it, not in LazyLLM's in-memory store
    assert (tmp_path / 'db' / 'pages.db').exists() and (tmp_path / 'db' / 'pages.db.assets').is_dir()
    # exact MaxSim: the same scores as the reference over the pages re-encoded here
    q = torch.tensor(embed(query))
    for node in nodes:
        page = torch.tensor(embed([_data_uri(Image.open(node.image_path))], modality='image')[0])
        assert node.similarity_score == pytest.approx(float(maxsim_reference([q], [page])[0, 0]), rel=1e-2)
    scores = [n.similarity_score for n in nodes]
    assert scores == sorted(scores, reverse=True)
    only = retriever(query, filters={'file_name': ['manual.pdf']}, topk=5)
    assert len(only) == 3 and {n.metadata['file_name'] for n in only} == {'manual.pdf'}
    with pytest.raises(Exception, match='cannot filter on'):
        retriever(query, filters={'colour': 'red'})


def test_colpali_and_text_documents_swap_in_one_line_and_fuse_in_lazyllm(embed, pdf_dir, tmp_path):
    from lazyllm.tools.rag.rank_fusion.reciprocal_rank_fusion import RRFFusion
    from lazyllm.tools.rag.retriever import WeightedRetriever

    from lazyllm_colpali import HybridRetriever
    from lazyllm_colpali.pipelines import build_search

    visual_doc = _colpali_milvus_doc(embed, pdf_dir, tmp_path, 'colpali_swap_visual')
    text_doc = Document(str(pdf_dir), name='colpali_swap_text')
    visual = Retriever(visual_doc, 'image', similarity='maxsim', topk=3)
    text = Retriever(text_doc, 'CoarseChunk', similarity='bm25', topk=3)
    with WeightedRetriever(topk=4) as weighted:   # (its positional form trips over its own _strict in 1.4.0)
        weighted.visual = Retriever(visual_doc, 'image', similarity='maxsim', topk=3, weight=1.0)
        weighted.text = Retriever(text_doc, 'CoarseChunk', similarity='bm25', topk=3, weight=1.0)
    # the same flow with either retriever: one line differs (the tiny model's weights are random, so only
    # the text ranking is checked for relevance)
    assert build_search(visual)('replace the filter every month').count('.pdf, p. ') == 3
    assert build_search(text)('replace the filter every month').startswith('1. manual.pdf')
    with pipeline() as ppl:                        # LazyLLM's own fusion over both
        with parallel() as ppl.arms:
            ppl.arms.visual = visual
            ppl.arms.text = text
        ppl.fuse = RRFFusion(top_k=6)
    fused = ppl('replace the filter every month')
    assert {type(n).__name__ for n in fused} == {'ImageDocNode', 'DocNode'} and len(fused) == 6
    mixed = weighted('replace the filter every month')   # LazyLLM's weighted merge
    assert len(mixed) == 4 and {type(n).__name__ for n in mixed} == {'ImageDocNode', 'DocNode'}
    # ours fuses by page: stock LazyLLM retrievers are accepted as arms too
    hybrid = HybridRetriever({'visual': visual, 'text': text}, weights={'text': 2.0}, topk=3)
    assert hybrid('replace the filter every month')[0].metadata['file_name'] == 'manual.pdf'


def test_every_arm_has_one_forward_signature():
    import inspect

    from lazyllm_colpali import ColPaliRetriever, HybridRetriever, PageTextRetriever
    for cls in (ColPaliRetriever, PageTextRetriever, HybridRetriever):
        params = inspect.signature(cls.forward).parameters
        assert list(params)[:3] == ['self', 'query', 'filters'] and params['filters'].default is None
        assert params['topk'].kind is inspect.Parameter.KEYWORD_ONLY and params['topk'].default is None
        assert list(inspect.signature(cls.search).parameters)[:3] == ['self', 'query', 'filters']


def test_importing_the_package_leaves_the_host_alone():
    code = ('import os, sys, lazyllm\n'
            'import lazyllm_colpali\n'
            'from lazyllm_colpali import ColPaliEmbed, ColPaliMilvusStore\n'   # registers the extensions
            'print("LAZYLLM_TRACE_ENABLED" not in os.environ, os.environ.get("LAZYLLM_TRACE_ENABLED"))\n')
    env = {k: v for k, v in os.environ.items() if k != 'LAZYLLM_TRACE_ENABLED'}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split()[:2] == ['True', 'None'], out.stdout + out.stderr[-2000:]
    bare = subprocess.run([sys.executable, '-c', 'import sys, lazyllm_colpali; print("torch" in sys.modules, '
                           '"lazyllm" in sys.modules)'], env=env, capture_output=True, text=True, timeout=300)
    assert bare.stdout.split() == ['False', 'False'], bare.stderr[-2000:]   # names load on first use


def test_colpali_milvus_store_contract(tmp_path):
    import torch

    from lazyllm_colpali import ColPaliMilvusStore, StoreError, maxsim_reference

    import pickle

    store = ColPaliMilvusStore(uri=str(tmp_path / 's.db'), mode='exact')
    clone = pickle.loads(pickle.dumps(store))   # LazyLLM pickles stores into its worker processes
    assert (clone.uri, clone.prefix, clone.dir) == (store.uri, store.prefix, str(tmp_path / 's.db'))
    store.connect(embed={'colpali': None}, collections=['col_image'])
    assert not store.collection_exists('col_image')
    assert store.search('col_image', 'q', query_embedding=[[1.0, 0.0]], topk=3, embed_key='colpali') == []
    torch.manual_seed(0)
    pages = {f'a-p{i}': torch.randn(5, 8) for i in (1, 2)} | {'b-p1': torch.randn(4, 8)}

    def segment(uid):
        doc = uid.split('-')[0]
        return {'uid': uid, 'doc_id': doc, 'group': 'image', 'kb_id': 'kb1', 'image_keys': [f'/img/{uid}.png'],
                'meta': {'file_name': f'{doc}.pdf', 'page': int(uid[-1])}, 'global_meta': {'docid': doc},
                'embedding': {'colpali': pages[uid].tolist()}}
    assert store.upsert('col_image', [segment(u) for u in pages])
    assert store.upsert('col_image', [{**segment('a-p1'), 'embedding': {}}])   # a segment-only update: no-op
    query = torch.randn(3, 8)
    found = store.search('col_image', 'q', query_embedding=query.tolist(), topk=3, embed_key='colpali')
    reference = maxsim_reference([query], list(pages.values()))[0]
    expected = sorted(zip(pages, reference.tolist()), key=lambda kv: -kv[1])
    assert [f['uid'] for f in found] == [uid for uid, _ in expected]
    assert [f['score'] for f in found] == pytest.approx([s for _, s in expected], rel=1e-2)   # fp16 on disk
    only_b = store.search('col_image', 'q', query_embedding=query.tolist(), topk=3, embed_key='colpali',
                          filters={'file_name': 'b.pdf'})
    assert [f['uid'] for f in only_b] == ['b-p1']
    assert {g['uid'] for g in store.get('col_image', {'uid': ['a-p1', 'zz']})} == {'a-p1'}
    assert store.delete('col_image', {'uid': ['a-p1']})   # one node of a document: that page only (issue 23)
    assert store.last_deleted['col_image'] == {'documents': [], 'pages': ['a-p1']}
    assert store.collection_exists('col_image') and len(store.get('col_image', {'uid': list(pages)})) == 2
    store.delete('col_image', {'docid': ['a']})
    assert store.last_deleted['col_image'] == {'documents': ['a'], 'pages': ['a-p2']}
    assert [g['uid'] for g in store.get('col_image', {'uid': list(pages)})] == ['b-p1']
    with pytest.raises(ValueError, match='nothing was deleted'):   # one bad id after a good one (issue 23)
        store.delete('col_image', {'docid': ['b', '../x']})
    assert [g['uid'] for g in store.get('col_image', {'uid': list(pages)})] == ['b-p1']
    with pytest.raises(ValueError, match='expected a name or a list of names'):   # {'$ne': ...}: refused
        store.search('col_image', 'q', query_embedding=query.tolist(), embed_key='colpali',
                     filters={'file_name': {'$ne': 'x'}})
    store.delete('col_image', {'kb_id': 'kb1'})
    assert store.get('col_image', {'uid': list(pages)}) == []
    with pytest.raises(StoreError, match='multi-vectors'):
        store.upsert('col_image', [{**segment('b-p1'), 'embedding': {'colpali': [0.1] * 8}}])
    with pytest.raises(ValueError, match='cannot filter on'):
        store.search('col_image', 'q', query_embedding=query.tolist(), embed_key='colpali', filters={'x': 1})
    store.close()


def test_reader_is_a_lazyllm_reader_and_reads_through_fsspec(tmp_path, pdf_dir):
    import fsspec
    import lazyllm

    reader = PdfPageImageReader(str(tmp_path / 'pages'), dpi=30)
    assert lazyllm.reader.PdfPageImageReader is PdfPageImageReader
    local = reader(pdf_dir / 'manual.pdf')
    memory = fsspec.filesystem('memory')
    memory.pipe('/remote/manual.pdf', (pdf_dir / 'manual.pdf').read_bytes())
    remote = reader('/remote/manual.pdf', fs=memory)
    # ids hash bytes + location (as the indexer's do): same bytes elsewhere are another document
    assert [n.metadata['content_sha'] for n in remote] == [n.metadata['content_sha'] for n in local]
    assert [n.uid for n in reader('/remote/manual.pdf', fs=memory)] == [n.uid for n in remote] and len(local) == 3
    assert remote[0].metadata['file_name'] == 'manual.pdf' and os.path.isfile(remote[0].image_path)
