"""The local Hub's own contract, through the real huggingface_hub client: auth rules, refs, errors, ranges."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def test_environment_points_at_the_local_hub(hub_server):
    import huggingface_hub.constants as constants

    assert constants.ENDPOINT == hub_server.url and hub_server.url.startswith("http://127.0.0.1:")
    assert HfApi().whoami()["name"] == hub_server.user


def test_writes_need_a_valid_token(hub_repo_id, hub_server):
    api = HfApi()
    with pytest.raises(HfHubHTTPError) as no_token:
        api.create_repo(hub_repo_id, token=False)
    assert no_token.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as bad_token:
        api.create_repo(hub_repo_id, token="hf_not_a_real_token")
    assert bad_token.value.response.status_code == 401
    api.create_repo(hub_repo_id)
    with pytest.raises(HfHubHTTPError) as bad_token_read:  # the Hub refuses a bad token even on public reads
        api.model_info(hub_repo_id, token="hf_not_a_real_token")
    assert bad_token_read.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as anonymous_commit:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id, token=False)
    assert anonymous_commit.value.response.status_code == 401
    assert set(hub_server.files(hub_repo_id)) == {".gitattributes"}


def test_private_repos_are_invisible_without_token(hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="notes.txt", repo_id=hub_repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "notes.txt", token=False)
    assert open(hf_hub_download(hub_repo_id, "notes.txt")).read() == "secret"


def test_branches_tags_and_missing_entries(hub_repo_id, hub_server):
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="weights.txt", repo_id=hub_repo_id).oid
    api.create_tag(hub_repo_id, tag="v1.0")
    api.create_branch(hub_repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="weights.txt", repo_id=hub_repo_id, revision="dev")
    read = lambda rev: open(hf_hub_download(hub_repo_id, "weights.txt", revision=rev)).read()  # noqa: E731
    assert (read("main"), read("dev"), read("v1.0"), read(first)) == ("v1", "v2", "v1", "v1")
    refs = api.list_repo_refs(hub_repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"]
    with pytest.raises(RevisionNotFoundError):
        api.model_info(hub_repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "missing.txt")
    tree = {entry.path for entry in api.list_repo_tree(hub_repo_id, revision="dev", recursive=True)}
    assert tree == {".gitattributes", "weights.txt"}
    assert len(hub_server.commits(hub_repo_id, revision="dev")) == 3


def test_lfs_uploads_and_range_reads(hub_repo_id, hub_server):
    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    payload = bytes(range(256)) * 40
    api.upload_file(path_or_fileobj=payload, path_in_repo="data/shard.parquet", repo_id=hub_repo_id,
                    repo_type="dataset")
    assert any(path.endswith("/info/lfs/objects/batch") for _, path, _ in hub_server.requests)
    assert hub_server.read(hub_repo_id, "data/shard.parquet", repo_type="dataset") == payload
    url = f"{hub_server.url}/datasets/{hub_repo_id}/resolve/main/data/shard.parquet"
    response = httpx.get(url, headers={"Range": "bytes=10-19", "Authorization": f"Bearer {hub_server.token}"})
    assert response.status_code == 206 and response.content == payload[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(payload)}"
