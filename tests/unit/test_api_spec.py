"""The Swagger 2.0 response validator: it accepts what a real dockerd answered (reference
transcripts) and refuses wrong shapes."""

from __future__ import annotations

import json

import pytest

from controlplane.api.spec import SPEC_PATH, Spec, SpecError, shared_path

TRANSCRIPTS = shared_path("reference/real-swarm/api-transcripts")
TEMPLATES = {
    "/v1.41/info": "/info",
    "/v1.41/version": "/version",
    "/v1.41/networks": "/networks",
    "/v1.41/networks/create": "/networks/create",
}


@pytest.fixture(scope="module")
def spec() -> Spec:
    if not SPEC_PATH.exists():
        pytest.skip(f"the Engine API spec is not at {SPEC_PATH}")
    return Spec.load(SPEC_PATH)


def test_real_dockerd_responses_validate(spec: Spec) -> None:
    if not TRANSCRIPTS.is_dir():
        pytest.skip(f"no reference transcripts at {TRANSCRIPTS}")
    checked = 0
    for name in (
        "info-swarm-cli28",
        "version-cli28",
        "network-ls-cli28",
        "network-create-cli28",
        "network-inspect-cli28",
        "bad-network-dup-cli28",
        "bad-subnet-notcidr-cli28",
    ):
        for ex in json.loads((TRANSCRIPTS / f"{name}.json").read_text())["exchanges"]:
            path = ex["path"]
            template = TEMPLATES.get(path)
            if template is None and path.startswith("/v1.41/networks/"):
                template = "/networks/{id}"
            if template is None:
                continue
            spec.validate_response(template, ex["method"], ex["status"], ex["response_body"])
            checked += 1
    assert checked >= 7


def test_wrong_shapes_are_refused(spec: Spec) -> None:
    good = {"Id": "abc", "Warning": ""}
    spec.validate_response("/networks/create", "POST", 201, good)
    with pytest.raises(SpecError, match="is not a string"):
        spec.validate_response("/networks/create", "POST", 201, {"Id": 5})
    with pytest.raises(SpecError, match="unknown property 'Idd'"):
        spec.validate_response("/networks/create", "POST", 201, {"Idd": "x"})
    with pytest.raises(SpecError, match="is not an array"):
        spec.validate_response("/networks", "GET", 200, {"Name": "x"})
    with pytest.raises(SpecError, match=r"\$\[0\].Attachable"):
        spec.validate_response("/networks", "GET", 200, [{"Attachable": "yes"}])
    with pytest.raises(SpecError, match="null where string"):
        spec.validate_response("/networks/{id}", "GET", 200, {"Name": None})
    with pytest.raises(SpecError, match="no documented 201"):
        spec.validate_response("/networks", "GET", 201, [])
    with pytest.raises(SpecError, match="not in the spec"):
        spec.validate_response("/nowhere", "GET", 200, [])
    # an undocumented error status must still be an ErrorResponse
    spec.validate_response("/networks/create", "POST", 409, {"message": "x"})
    with pytest.raises(SpecError):
        spec.validate_response("/networks/create", "POST", 409, {"message": 1})
    # allOf and $ref: SystemInfo.Swarm.Cluster (ClusterInfo) is checked deep down
    with pytest.raises(SpecError, match="SubnetSize"):
        spec.validate_response("/info", "GET", 200, {"Swarm": {"Cluster": {"SubnetSize": "24"}}})
