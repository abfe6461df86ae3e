"""`docker/compose.yml` and `docker/Dockerfile`, run as far as these machines allow.

No container engine runs here (no daemon, no registry), so compose itself cannot be
started. What is checked instead is the vna service as its container would run it:
`vna serve` with the Dockerfile's ENV and the compose file's environment,
interpolated as compose does (the operator's MINIO_ROOT_USER / MINIO_ROOT_PASSWORD
set), against a real S3 endpoint (SeaweedFS in MinIO's place, with those
credentials) after the bucket that the minio-init service makes. A STOW-RS, QIDO-RS
and WADO-RS round trip then goes through it with an API key made by
`vna keys create` on the same settings, as `docker compose exec vna vna keys create`
would. Only what cannot exist outside a container is rewritten: the host name
`minio`, the volume's path and the listening addresses.

So a change to the code's settings (a renamed variable, another URL form) or to the
compose file (a typo in a variable, a bucket the init step does not make, an index
outside the volume) fails here, not on a hospital's first `docker compose up`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from tests.fixtures_s3 import S3Server
from tests.fixtures_server import (
    STORED_AS_IS,
    STOW_TYPE,
    free_port,
    single_part,
    stop_process,
    stow_body,
    wait_http,
)
from vna.index.factory import sqlite_path
from vna.testdata import dicom as td

DOCKER = Path(__file__).resolve().parent.parent / "docker"
VNA = str(Path(sys.executable).parent / "vna")
# ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR and $$ (a literal $), as compose reads them
_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?-)([^}]*))?\}|(\w+)|(\{))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` (a compose file, or any part of it) with its variables substituted."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        dollar, name, op, default, bare, odd = m.groups()
        if odd:
            raise ValueError(f"a compose variable form this test does not read: {value!r}")
        if dollar:
            return "$"
        name = name or bare
        if op == ":-" and not env.get(name):
            return default
        if op == "-" and name not in env:
            return default
        return env.get(name, "")

    return _VARIABLE.sub(one, value)


def dockerfile_instructions(text: str, keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction of the final stage."""
    stage = text.split("\nFROM ")[-1]
    lines = re.sub(r"\\\n\s*", " ", stage).splitlines()
    return [ln.split(None, 1)[1] for ln in lines if ln.split(None, 1)[:1] == [keyword]]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def image_env(dockerfile: str) -> dict[str, str]:
    pairs = [p for args in dockerfile_instructions(dockerfile, "ENV") for p in shlex.split(args)]
    return dict(p.split("=", 1) for p in pairs)


def compose_for(s3: S3Server) -> dict[str, Any]:
    """The compose file as ``docker compose`` reads it with the operator's MinIO
    credentials set (here, those SeaweedFS checks)."""
    raw = yaml.safe_load((DOCKER / "compose.yml").read_text())
    return interpolate(
        raw, {"MINIO_ROOT_USER": s3.access_key, "MINIO_ROOT_PASSWORD": s3.secret_key}
    )


def test_the_image_runs_vna_serve_on_its_volume_and_ports(dockerfile, image_env):
    entrypoint = json.loads(dockerfile_instructions(dockerfile, "ENTRYPOINT")[0])
    cmd = json.loads(dockerfile_instructions(dockerfile, "CMD")[0])
    assert entrypoint + cmd == ["vna", "serve"]
    (volume,) = dockerfile_instructions(dockerfile, "VOLUME")
    assert image_env["VNA_DATA"] == volume
    exposed = set(dockerfile_instructions(dockerfile, "EXPOSE")[0].split())
    ports = {image_env[v].rsplit(":", 1)[1] for v in ("VNA_HTTP", "VNA_DIMSE")}
    assert ports == exposed
    assert all(image_env[v].startswith("0.0.0.0:") for v in ("VNA_HTTP", "VNA_DIMSE"))


@pytest.mark.s3
def test_compose_wires_minio_bucket_credentials_and_volume(s3_server, image_env):
    compose = compose_for(s3_server)
    services = compose["services"]
    vna, init, minio = services["vna"], services["minio-init"], services["minio"]
    env = vna["environment"]
    storage = urlsplit(env["VNA_STORAGE"])
    # the bucket vna writes to is the one the init step makes, on the minio service
    assert re.search(rf"mc mb --ignore-existing local/{storage.netloc}\b", init["entrypoint"])
    assert "endpoint=http://minio:9000" in storage.query
    assert init["depends_on"]["minio"]["condition"] == "service_healthy" and minio["healthcheck"]
    assert vna["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    # vna signs with MinIO's root credentials, the init step too (its shell expands $$)
    assert env["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    assert init["environment"] == minio["environment"]
    # the index lives on the data volume, so it survives the container
    (mount,) = vna["volumes"]
    volume, target = mount.split(":")
    assert volume in compose["volumes"] and target == image_env["VNA_DATA"]
    assert sqlite_path(env["VNA_INDEX"]).is_relative_to(target)
    published = {p.split(":")[1] for p in vna["ports"]}
    assert published == {image_env[v].rsplit(":", 1)[1] for v in ("VNA_HTTP", "VNA_DIMSE")}


def container_env(s3: S3Server, image_env: dict[str, str], volume: Path) -> dict[str, str]:
    """The vna container's environment, outside a container: the volume is a temp
    dir, `minio` is SeaweedFS, the ports are free loopback ones."""
    service = compose_for(s3)["services"]["vna"]
    env = {**image_env, **service["environment"]}
    target = image_env["VNA_DATA"]
    env["VNA_DATA"] = str(volume)
    env["VNA_INDEX"] = env["VNA_INDEX"].replace(target, str(volume), 1)
    env["VNA_STORAGE"] = env["VNA_STORAGE"].replace("http://minio:9000", s3.endpoint)
    env["VNA_HTTP"] = f"127.0.0.1:{free_port()}"
    env["VNA_DIMSE"] = f"127.0.0.1:{free_port()}"
    return env


def make_bucket_as_init_does(s3: S3Server, storage_url: str) -> str:
    bucket = urlsplit(storage_url).netloc
    client = s3.client()
    if not client.bucket_exists(bucket):  # mc mb --ignore-existing
        client.make_bucket(bucket)
    return bucket


@pytest.mark.s3
def test_vna_service_runs_against_s3_as_compose_configures_it(s3_server, image_env, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VNA_", "AWS_"))}
    env = {**base, **container_env(s3_server, image_env, tmp_path / "var-lib-vna")}
    bucket = make_bucket_as_init_does(s3_server, env["VNA_STORAGE"])
    key = subprocess.run(
        [VNA, "keys", "create", "--role", "pacs"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()[-1]  # fmt: skip
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen([VNA, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://{env['VNA_HTTP']}"
        wait_http(url + "/healthz", proc)  # the image's HEALTHCHECK
        round_trip(url + "/dicom-web", {"Authorization": f"Bearer {key}"})
        stored = list(s3_server.client().list_objects(bucket, prefix="archive/", recursive=True))
        assert stored, "no blob under the compose file's bucket and prefix"
        assert (tmp_path / "var-lib-vna" / "index.db").exists()  # on the volume
    finally:
        stop_process(proc)
        log.close()


def round_trip(dicomweb: str, headers: dict[str, str]) -> None:
    ds = td.make_ct(0, ctx=td.context(seed=7))
    data = td.to_bytes(ds)
    r = requests.post(
        dicomweb + "/studies",
        data=stow_body([data]),
        headers={**headers, "Content-Type": STOW_TYPE},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    found = requests.get(
        dicomweb + "/instances", params={"SOPInstanceUID": ds.SOPInstanceUID},
        headers=headers, timeout=60,
    ).json()  # fmt: skip
    assert [i["00080018"]["Value"] for i in found] == [[ds.SOPInstanceUID]]
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    r = requests.get(
        f"{dicomweb}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}",
        headers={**headers, "Accept": STORED_AS_IS}, timeout=60,
    )  # fmt: skip
    assert r.status_code == 200
    assert single_part(r) == data
