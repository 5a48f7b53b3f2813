"""The catalog, playground, fine-tuning and provisioned-throughput pages (their flows run in the browser test)."""

from __future__ import annotations

from outcrop.platform.objectstore import S3Uri


def test_the_catalog_filters_with_the_apis_own_filters(root):
    everything = root.get("models")
    embeddings = root.get("models?modality=EMBEDDING")
    assert everything.status == 200 and embeddings.status == 200
    embedding, text = "<code>sentence-transformers.all-minilm-l6-v2-v1:0</code>", \
        "<code>huggingface.smollm2-135m-instruct-v1:0</code>"
    assert embedding in everything.body and text in everything.body
    assert embedding in embeddings.body and text not in embeddings.body
    refused = root.get("models?modality=SMELL")  # the API's enum check, as a page
    assert refused.status == 400 and "byOutputModality" in refused.body


def test_the_playground_lists_models_and_carries_no_inline_script(root):
    page = root.get("playground?model=amazon.titan-embed-text-v2:0&mode=embeddings")
    assert page.status == 200 and 'id="playground"' in page.body
    assert "<script>" not in page.body and " style=" not in page.body and " on" + "click=" not in page.body
    assert 'value="embeddings" selected' in page.body


def test_the_fine_tuning_form_offers_the_jsonl_objects_the_principal_may_read(root, services):
    services.store.create_bucket("picker")
    root.post("storage", {"bucket": "mine"})
    services.store.put_bytes(S3Uri("mine", "data/train.jsonl"), b'{"prompt": "a", "completion": "b"}\n')
    services.store.put_bytes(S3Uri("mine", "data/notes.txt"), b"x")
    form = root.get("customization/create")
    assert 'value="s3://mine/data/train.jsonl"' in form.body and "notes.txt" not in form.body
    assert "s3://picker/" not in form.body  # a bucket made behind IAM's back has no owner: no one sees it


def test_provisioned_throughput_form_errors_are_the_apis(root):
    page = root.post("provisioned/create", {"provisionedModelName": "pt", "modelId": "no-such-model",
                                            "modelUnits": "0"})
    assert page.status == 400 and page.errors()[0].startswith("ValidationException: ")
    assert "modelUnits" in page.errors()[0] and 'value="no-such-model"' in page.body
    assert root.get("provisioned").status == 200
    missing = root.get("provisioned/nothing-here")
    assert missing.status == 404 and "ResourceNotFoundException" in missing.body
