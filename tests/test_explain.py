"""Similarity maps (issue 20): the patch geometry of every family checked against what its real (tiny)
architecture encodes from a rendered PDF, crafted vectors that light exactly one known pixel box (also
through token pooling, ColSmol's global image and a real Milvus Lite store), and the maps on real indexes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lazyllm_colpali.models.geometry import PageGeometry, page_geometry, query_tokens
from lazyllm_colpali.retrieve.explain import ExplainError, explain_page
from tests.helpers.pdfs import make_text_pdf

FAMILIES = ('colpali', 'colqwen2', 'colqwen2_5', 'colidefics3')
SIZES = ((612, 792), (900, 500))   # portrait and landscape: the dynamic grids differ


@pytest.fixture(scope='module')
def encoders(tiny_model_dir):
    from lazyllm_colpali import ColPaliEncoder

    built = {}

    def get(family: str):
        if family not in built:
            built[family] = ColPaliEncoder(str(tiny_model_dir(family)), device='cpu', batch_size=2).load()
        return built[family]
    return get


def _square_pdf(path, size, box, dpi):
    """A page of ``size`` px at ``dpi`` with a black square inside the pixel ``box`` (drawn in points)."""
    from fpdf import FPDF

    scale = 72 / dpi
    pdf = FPDF(unit='pt', format=(size[0] * scale, size[1] * scale))
    pdf.add_page()
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) / 5, (y1 - y0) / 5      # stay inside the cell: resampling blurs edges
    pdf.set_fill_color(0, 0, 0)
    pdf.rect((x0 + mx) * scale, (y0 + my) * scale, (x1 - x0 - 2 * mx) * scale, (y1 - y0 - 2 * my) * scale, style='F')
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def _rendered(path, dpi):
    from lazyllm_colpali.ingest.render import render_pages

    return next(iter(render_pages(path, dpi, 4096)))[1]


@pytest.mark.parametrize('family', FAMILIES)
def test_the_geometry_is_where_each_architecture_puts_a_rendered_mark(encoders, family, tmp_path):
    """A black square rendered (pypdfium2) into one cell of the page changes, of all image tokens, the one the
    geometry places at that cell the most: the grid, the 2x2 merge, the tile order and the global image are
    those of the real architecture, and the sequence length is what the encoder stores."""
    encoder = encoders(family)
    dpi = 72
    for size in SIZES:
        blank = _rendered(make_text_pdf(tmp_path / f'blank{size}.pdf', [''], size=size), dpi)
        assert blank.size == size
        geometry = page_geometry(encoder.processor, family, *size)
        base = encoder.encode_images([blank])[0]
        assert len(base) == geometry.n_tokens
        n_x, n_y = geometry.grid_size
        for cell in ((1, 2), (n_x - 2, n_y // 2)):
            page = _rendered(_square_pdf(tmp_path / f'{cell}{size}.pdf', size, geometry.cell_box(*cell), dpi), dpi)
            change = (encoder.encode_images([page])[0] - base).norm(dim=1)
            for level, grid in enumerate(geometry.grids):
                x, y = geometry.cell_at(*_centre(geometry.cell_box(*cell)), grid=level)
                positions = grid.positions.flatten()
                assert int(positions[change[positions].argmax()]) == int(grid.positions[y, x]), (family, size, cell)


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _crafted(geometry: PageGeometry, lit, dim=32, seed=0):
    """Page vectors orthogonal to the query direction e0, except the tokens at ``lit`` positions, which are e0."""
    page = torch.randn(geometry.n_tokens, dim, generator=torch.Generator().manual_seed(seed))
    page[:, 0] = 0
    page = torch.nn.functional.normalize(page, dim=1)
    page[list(lit)] = torch.eye(dim)[0]
    return page, torch.eye(dim)[:1]


def _lit_box(overlay: Image.Image):
    changed = np.argwhere((np.asarray(overlay) != 255).any(axis=2))
    (y0, x0), (y1, x1) = changed.min(0), changed.max(0)
    return int(x0), int(y0), int(x1) + 1, int(y1) + 1


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('size', SIZES)
def test_one_crafted_patch_lights_exactly_its_pixel_box(encoders, family, size):
    geometry = page_geometry(encoders(family).processor, family, *size)
    white = Image.new('RGB', size, 'white')
    n_x, n_y = geometry.grid_size
    for x, y in ((0, 0), (n_x - 1, n_y - 1), (n_x // 3, n_y // 2)):
        page, query = _crafted(geometry, [int(geometry.grids[0].positions[y, x])])
        explanation = explain_page(query, page, geometry, page_id='p', query='q')
        assert explanation.grid_size == (n_x, n_y) and explanation.token_maps.shape == (1, n_y, n_x)
        assert explanation.score == pytest.approx(1.0) and explanation.on_image == [True]
        assert explanation.region() == geometry.cell_box(x, y)
        assert _lit_box(explanation.overlay(white)) == geometry.cell_box(x, y)        # by rendering
        assert explanation.overlay(white, box=True).size == size


def test_colsmol_global_image_tokens_light_the_page_area_they_cover(encoders):
    geometry = page_geometry(encoders('colidefics3').processor, 'colidefics3', 612, 792)
    assert len(geometry.grids) == 2 and (geometry.grids[1].n_x, geometry.grids[1].n_y) == (8, 8)
    page, query = _crafted(geometry, [int(geometry.grids[1].positions[5, 2])])   # global cell x=2, y=5
    explanation = explain_page(query, page, geometry)
    assert explanation.region() == geometry.cell_box(2, 5, grid=1)
    assert _lit_box(explanation.overlay(Image.new('RGB', (612, 792), 'white'))) == geometry.cell_box(2, 5, grid=1)


@pytest.mark.parametrize('family', FAMILIES)
def test_pooled_vectors_map_back_to_the_patches_they_pooled(encoders, family):
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    from lazyllm_colpali.models.encoder import pooled_rows

    geometry = page_geometry(encoders(family).processor, family, 612, 792)
    grid = geometry.grids[0].positions
    cells = [(1, 1), (3, 7), (grid.shape[1] - 1, 2)]
    page, query = _crafted(geometry, [int(grid[y, x]) for x, y in cells])
    pooled = HierarchicalTokenPooler().pool_embeddings([page], pool_factor=3, return_dict=True)
    vectors, groups = pooled.pooled_embeddings[0], pooled_rows(pooled.cluster_id_to_indices[0], len(page))
    assert len(vectors) < len(page) / 2
    explanation = explain_page(query, vectors, geometry, token_groups=groups)
    heat = explanation.heat()
    lit = {(int(x), int(y)) for y, x in np.argwhere(heat > 0.999)}
    assert set(cells) <= lit     # the three identical patches were pooled together and all light up
    for x, y in lit - set(cells):   # anything else sharing their row holds e0's direction too
        assert float(page[grid[y, x]] @ query[0]) > 0.99
    assert explanation.on_image == [True]
    text_token = int(geometry.n_tokens - 1)           # the prompt's last token: not on the page's grid
    page_on_text, _ = _crafted(geometry, [text_token])
    assert explain_page(query, page_on_text, geometry).on_image == [False]
    with pytest.raises(ExplainError, match='token pooling'):
        explain_page(query, vectors, geometry)        # pooled vectors without their groups do not fit the grid
    with pytest.raises(ExplainError, match='re-index'):
        explain_page(query, vectors[:-1], geometry, token_groups=groups)   # groups of another version of the page


def test_query_tokens_tell_the_text_from_the_family_prompt(encoders):
    labels, content = query_tokens(encoders('colpali').processor, 'pump 7')
    assert len(labels) == len(encoders('colpali').encode_queries(['pump 7'])[0])
    assert ''.join(t for t, c in zip(labels, content) if c).strip() == 'pump 7'
    assert labels[0] == '<bos>' and not content[0] and not content[-1]     # <bos> ... <pad> x 10
    labels, content = query_tokens(encoders('colqwen2').processor, 'pump 7')
    assert ''.join(t for t, c in zip(labels, content) if c) == 'pump 7' and labels[-1] == '<|endoftext|>'


@pytest.fixture(scope='module')
def pooled_index(tiny_model_dir, tmp_path_factory):
    from lazyllm_colpali import ColPaliEncoder, ColPaliIndex, MilvusMultiVectorStore

    root = tmp_path_factory.mktemp('explain')
    make_text_pdf(root / 'docs' / 'report.pdf', ['Revenue grew 12% in 2023.', 'Costs by region.'])
    encoder = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', pool_factor=2).load()
    store = MilvusMultiVectorStore(str(root / 'db' / 'c.db'), dim=encoder.dim)
    index = ColPaliIndex(encoder, store, dpi=50, progress=False)
    index.add([root / 'docs'])
    yield index
    store.close()


def test_a_pooled_page_keeps_its_token_groups_in_milvus_and_is_explained(pooled_index):
    index = pooled_index
    hits = index.search('revenue in 2023', 2)
    groups = index.store.token_groups(hits[0].page_id)
    stored = index.retriever.page_vectors(hits[0].page_id)
    assert groups is not None and int(groups.max()) + 1 == len(stored) and len(groups) > 1.5 * len(stored)
    explanation = index.explain('revenue in 2023', hits[0])
    assert len(groups) == explanation.geometry.n_tokens
    assert explanation.score == pytest.approx(hits[0].score, rel=1e-3)    # the same stored vectors the search scored
    assert explanation.file_name == 'report.pdf' and explanation.page == hits[0].page
    data = json.loads(json.dumps(explanation.to_dict()))
    assert data['grid']['n_x'] * data['grid']['n_y'] == sum(len(r) for r in data['query_map'])
    assert len(data['token_maps']) == len(data['tokens']) and sum(data['content']) == len('revenue in 2023')
    overlay = explanation.overlay(box=True)
    assert overlay.size == (explanation.width, explanation.height)
    with pytest.raises(ExplainError, match='no page'):
        index.explain('revenue', 'not-a-page')


def test_deleting_a_document_deletes_its_token_groups(tiny_model_dir, tmp_path):
    from lazyllm_colpali import ColPaliEncoder, ColPaliIndex, MilvusMultiVectorStore

    make_text_pdf(tmp_path / 'docs' / 'a.pdf', ['Alpha page.'])
    encoder = ColPaliEncoder(str(tiny_model_dir('colpali')), device='cpu', pool_factor=4).load()
    store = MilvusMultiVectorStore(str(tmp_path / 'c.db'), dim=encoder.dim)
    try:
        index = ColPaliIndex(encoder, store, dpi=40, progress=False)
        index.add([tmp_path / 'docs'])
        page_id = store.page_ids()[0]
        assert store.token_groups(page_id) is not None
        store.delete_docs([store.documents()[0]['doc_id']])
        assert store.token_groups(page_id) is None
    finally:
        store.close()


def test_search_explain_writes_one_overlay_per_hit_and_per_token(tiny_model_dir, pdf_dir, tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                              text=True, timeout=600)

    db, out = tmp_path / 'c.db', tmp_path / 'maps'
    model = tiny_model_dir('colpali')
    indexed = cli('index', pdf_dir, '--model', model, '--db', db, '--dpi', 40, '--pool-factor', 2, '--no-progress')
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    found = cli('search', 'replace the filter', '-k', 2, '--db', db, '--explain', out, '--explain-tokens', '--json')
    assert found.returncode == 0 and found.stderr.strip() == '', found.stderr[-3000:]
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(rows) == 2
    for rank, row in enumerate(rows, 1):
        whole, *per_token = row['explain']
        assert whole.endswith(f'{rank:02d}_{row["file_name"][:-4].replace(" ", "_")}_p{row["page"]}.png')
        assert len(per_token) == len('replace the filter'.replace(' ', ''))   # the query's own tokens
        with Image.open(whole) as image, Image.open(row['image_path']) as page:
            assert image.size == page.size                    # the map drawn on the stored page, full size
    table = cli('search', 'replace the filter', '-k', 1, '--db', db, '--explain', out)
    assert table.returncode == 0 and 'similarity maps: 1 PNGs in' in table.stdout, table.stderr[-2000:]
    refused = cli('search', 'x', '--db', db, '--explain-tokens')
    assert refused.returncode != 0 and '--explain-tokens needs --explain' in refused.stderr


def test_api_explain_returns_the_png_or_the_grid(pooled_index):
    import httpx

    from lazyllm_colpali.serving.api import create_app
    from tests.helpers.servers import serve_in_thread

    index = pooled_index
    hit = index.search('costs by region', 1)[0]
    with serve_in_thread(create_app(index)) as url:
        png = httpx.post(f'{url}/explain', json={'query': 'costs by region', 'page_id': hit.page_id}, timeout=120)
        assert png.status_code == 200 and png.headers['content-type'] == 'image/png'
        import io
        record = index.store.records([hit.page_id])[hit.page_id]
        with Image.open(io.BytesIO(png.content)) as image:
            assert image.size == (record.width, record.height)
        grid = httpx.post(f'{url}/explain', json={'query': 'costs by region', 'page_id': hit.page_id,
                                                  'format': 'json', 'token': 0}, timeout=120).json()
        assert grid['score'] == pytest.approx(hit.score, rel=1e-3) and 'token_maps' not in grid
        assert len(grid['query_map']) == grid['grid']['n_y'] and len(grid['token_map'][0]) == grid['grid']['n_x']
        for body, status, says in (
                ({'query': 'x', 'page_id': 'nope'}, 404, 'no page'),
                ({'query': 'x', 'page_id': hit.page_id, 'format': 'gif'}, 400, 'format'),
                ({'query': 'x', 'page_id': hit.page_id, 'token': 999}, 400, 'token'),
                ({'query': 'x'}, 400, 'page_id'),
                ({'query': '  ', 'page_id': hit.page_id}, 400, 'empty query'),
                ({'query': 'why ' * 600, 'page_id': hit.page_id}, 400, 'longer than')):
            r = httpx.post(f'{url}/explain', json=body, timeout=60)
            assert r.status_code == status and says in r.json()['detail'], (body, r.status_code, r.text)
