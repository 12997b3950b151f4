"""How multi-vectors are laid out in Milvus: blob rows (run on real servers in test_shared_store.py) and the
Milvus >= 2.6.4 Array-of-Structs layout, which cannot run on this machine: its schema, index and search
requests are checked here as pymilvus builds them, and the probe is run against servers that lack it."""
from __future__ import annotations

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from lazyllm_colpali import MilvusMultiVectorStore
from lazyllm_colpali.store.milvus_vectors import (STRUCT_MAX_TOKENS, BlobRows, NativeStruct, add_struct_field,
                                                  add_struct_index, blob_row_tokens, has_struct_field,
                                                  struct_search_request, supports_native_struct)


def test_struct_schema_index_and_search_request_are_what_milvus_2_6_expects():
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field('page_id', DataType.VARCHAR, max_length=64, is_primary=True)
    add_struct_field(MilvusClient, schema, 128)
    struct = schema.to_dict()['struct_fields'][0]
    assert struct['name'] == 'patches' and struct['max_capacity'] == STRUCT_MAX_TOKENS
    assert struct['fields'] == [{'name': 'vec', 'description': '', 'type': DataType.FLOAT_VECTOR,
                                 'params': {'dim': 128}}]
    index = MilvusClient.prepare_index_params()
    add_struct_index(index)
    (params,) = [p.to_dict() for p in index]
    assert params['field_name'] == 'patches[vec]' and params['metric_type'] == 'MAX_SIM_IP'
    query = np.random.default_rng(0).standard_normal((5, 128)).astype(np.float32)
    request = struct_search_request(query, limit=20, expr='(page >= 2)')
    assert request['anns_field'] == 'patches[vec]' and request['limit'] == 20 and request['filter'] == '(page >= 2)'
    assert request['search_params']['metric_type'] == 'MAX_SIM_IP'
    (embedding_list,) = request['data']
    assert np.allclose(embedding_list.to_numpy(), query)


def test_struct_row_fields_round_trip_and_capacity():
    vectors = np.random.default_rng(1).standard_normal((7, 4)).astype(np.float16)
    row = NativeStruct.row_fields(vectors)
    assert len(row['patches']) == 7 and np.allclose(np.array([p['vec'] for p in row['patches']]), vectors)
    with pytest.raises(ValueError, match='capacity'):
        NativeStruct.row_fields(np.zeros((STRUCT_MAX_TOKENS + 1, 4), np.float16))


def test_a_description_without_the_struct_field_means_no_native_support():
    kept = {'fields': [{'name': 'page_id'}], 'struct_array_fields': [{'name': 'patches', 'fields': []}]}
    dropped = {'fields': [{'name': 'page_id'}, {'name': 'pooled'}]}     # what milvus-lite and 2.3.5 return
    assert has_struct_field(kept) and not has_struct_field(dropped)


def test_servers_without_struct_fields_are_detected_and_get_blob_rows(tmp_path):
    client = MilvusClient(str(tmp_path / 'probe.db'))
    assert supports_native_struct(client, lambda what, fn, *a, **k: fn(*a, **k), 'c') is False
    assert client.list_collections() == []          # the probe cleans up after itself
    client.close()


def test_blob_rows_split_and_rejoin_pages_of_any_length():
    blob = BlobRows(client=None, call=None, collection='c', dim=128, float16=True)
    assert blob.row_tokens == blob_row_tokens(128) == 256 and blob.width == 32768
    for n in (1, 255, 256, 257, 1030):
        page = np.random.default_rng(n).standard_normal((n, 128)).astype(np.float16)
        rows = blob.rows('d-p00001', 'd', page)
        assert len(rows) == blob.parts(n) and all(len(r['blob']) == blob.width for r in rows)
        rejoined = np.concatenate([blob._decode(r['blob']) for r in rows])[:n * 128].reshape(n, 128)
        assert np.array_equal(rejoined, page)
    fp32 = BlobRows(client=None, call=None, collection='c', dim=128, float16=False)
    row = fp32.rows('d-p00001', 'd', page)[0]
    assert row['blob'].dtype == np.float32
    assert np.array_equal(fp32._decode(list(row['blob'])), row['blob'].astype(np.float16))


def test_a_lite_file_keeps_vectors_local_and_records_schema_and_model(tmp_path):
    store = MilvusMultiVectorStore(str(tmp_path / 'c.db'), dim=8)
    assert store.layout_name == 'local' and store.layout is None
    assert store.get_meta('schema')['dim'] == 8 and store.model_info() is None
    store.record_model({'name': 'm', 'family': 'colpali', 'dim': 8, 'fingerprint': 'abc'})
    store.close()
    again = MilvusMultiVectorStore(str(tmp_path / 'c.db'))
    assert again.model_info()['fingerprint'] == 'abc'
    again.close()
