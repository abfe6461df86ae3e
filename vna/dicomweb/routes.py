"""The DICOMweb route table: every route with the permission it needs."""

from __future__ import annotations

from vna.dicomweb import qido, rendered, stow, wado
from vna.web import DELETE, PUBLIC, READ, STORE, Route

S = "{study}"
SE = "{series}"
I = "{instance}"  # noqa: E741
F = "{frames}"


def routes(base: str) -> list[Route]:
    study = f"{base}/studies/{S}"
    series = f"{study}/series/{SE}"
    instance = f"{series}/instances/{I}"
    return [
        Route("POST", f"{base}/studies", stow.stow, STORE),
        Route("POST", study, stow.stow, STORE),
        Route("GET", f"{base}/studies", qido.search_studies, READ),
        Route("GET", f"{base}/series", qido.search_series, READ),
        Route("GET", f"{base}/instances", qido.search_instances, READ),
        Route("GET", f"{study}/series", qido.search_study_series, READ),
        Route("GET", f"{study}/instances", qido.search_study_instances, READ),
        Route("GET", f"{series}/instances", qido.search_series_instances, READ),
        Route("GET", study, wado.retrieve, READ),
        Route("GET", series, wado.retrieve, READ),
        Route("GET", instance, wado.retrieve, READ),
        Route("GET", f"{study}/metadata", wado.metadata, READ),
        Route("GET", f"{series}/metadata", wado.metadata, READ),
        Route("GET", f"{instance}/metadata", wado.metadata, READ),
        Route("GET", f"{instance}/frames/{F}", wado.frames, READ),
        Route("GET", f"{instance}/bulk/{{path:.+}}", wado.bulkdata, READ),
        Route("GET", f"{study}/rendered", rendered.rendered, READ),
        Route("GET", f"{series}/rendered", rendered.rendered, READ),
        Route("GET", f"{instance}/rendered", rendered.rendered, READ),
        Route("GET", f"{instance}/frames/{F}/rendered", rendered.rendered, READ),
        Route("GET", f"{study}/thumbnail", rendered.thumbnail, READ),
        Route("GET", f"{series}/thumbnail", rendered.thumbnail, READ),
        Route("GET", f"{instance}/thumbnail", rendered.thumbnail, READ),
        Route("GET", f"{instance}/frames/{F}/thumbnail", rendered.thumbnail, READ),
        Route("DELETE", study, wado.delete, DELETE),
        Route("DELETE", series, wado.delete, DELETE),
        Route("DELETE", instance, wado.delete, DELETE),
        Route("GET", "/wado", rendered.wado_uri, READ),
        Route("GET", f"{base}/wado", rendered.wado_uri, READ),
    ]


__all__ = ["routes", "PUBLIC"]
