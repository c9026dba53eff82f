"""The template registry over HTTP: ``/api/v1/templates``, exactly the design's four routes.

- ``GET /api/v1/templates/{domain}[?label=]`` -> ``{template, version, metadata}`` with an ETag
  (a hash of that body), ``304`` on a matching ``If-None-Match``: the runtime's client revalidates
  every 60 s and a 304 costs it no body;
- ``GET /api/v1/templates/{domain}/versions`` -> ``{versions: [...]}``;
- ``POST /api/v1/templates/{domain}`` ``{template, description}`` -> ``{version, created_at}``: the
  new version becomes current; the author is the key's name (scope ``write``);
- ``PUT /api/v1/templates/{domain}/{label}`` ``{version}`` -> ``{updated_at}``: ``current`` (a
  rollback when older), ``production`` or ``staging`` (scope ``write``).
Reads need ``read``. Storage, seeding and the template check are ``registry``'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from poet_runtime.safe_text import hidden_characters
from poet_runtime.service.context import ServiceContext
from poet_runtime.service.problems import Problem
from poet_runtime.service.registry import (LABELS, MAX_DESCRIPTION, Registry, TemplateRefused, UnknownTemplate)

log = logging.getLogger("poet_runtime")


class NewTemplate(BaseModel):
    template: str = Field(description="the template text, with ${field} placeholders")
    description: str = Field("", max_length=MAX_DESCRIPTION)


class LabelTarget(BaseModel):
    version: int = Field(ge=1)


class TemplateMetadata(BaseModel):
    created_at: str
    updated_at: str
    author: str
    description: str


class TemplateOut(BaseModel):
    template: str
    version: int
    metadata: TemplateMetadata


class VersionOut(TemplateMetadata):
    version: int


class VersionsOut(BaseModel):
    versions: list[VersionOut]


class CreatedOut(BaseModel):
    version: int
    created_at: str


class UpdatedOut(BaseModel):
    updated_at: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` holds ``etag`` (weak comparison, as RFC 9110 asks for this header)."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _stamp(path) -> tuple:
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns, status.st_size


class _Rendered:
    """The GET body and ETag of each (domain, label), kept until its pointer file or the version's
    metadata.json changes (both are replaced by rename, so a new inode; template.txt never changes):
    a revalidation costs two stat calls instead of three reads, a JSON dump and a hash."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.memo: dict[tuple[str, str], tuple] = {}

    def get(self, domain: str, label: str) -> tuple[bytes, str]:
        known = self.memo.get((domain, label))
        if known is not None:
            stamps, number, body, etag = known
            folder = self.registry.root / domain
            try:
                if stamps == (_stamp(folder / label), _stamp(folder / f"v{number}" / "metadata.json")):
                    return body, etag
            except OSError:
                pass
        folder = self.registry.root / domain
        for _ in range(3):  # a writer between the stamps and the reads: read again
            number = self.registry.label(domain, label)  # validates the name; UnknownTemplate -> 404
            try:
                before = (_stamp(folder / label), _stamp(folder / f"v{number}" / "metadata.json"))
            except OSError:
                before = None
            found = self.registry.get(domain, number)
            body = json.dumps({"template": found.text, "version": found.version,
                               "metadata": found.public_metadata()}, sort_keys=True).encode("utf-8")
            etag = _etag(body)
            try:
                after = (_stamp(folder / label), _stamp(folder / f"v{number}" / "metadata.json"))
            except OSError:
                after = None
            if before is not None and before == after:
                if len(self.memo) > 1024:
                    self.memo.clear()
                self.memo[(domain, label)] = (after, number, body, etag)
                return body, etag
        return body, etag  # changing under us three times: this answer, not remembered


def _not_found(error: UnknownTemplate) -> Problem:
    return Problem(404, "template-not-found", str(error).strip("'\""), title="Template not found")


def build_router(context: ServiceContext) -> APIRouter:
    registry = Registry(context.data_dir / "templates")
    seeded = registry.seed()
    if seeded:
        log.info("poet service: templates seeded from the shipped domains: %s", ", ".join(seeded))
    context.extras["templates"] = registry  # the service's own generation may read its templates here
    router = APIRouter(prefix="/api/v1/templates", tags=["templates"])
    reader = Depends(context.require("read"))
    writer = context.require("write")

    rendered = _Rendered(registry)

    @router.get("/{domain}", summary="A domain's template (current, or ?label=production|staging)",
                responses={200: {"model": TemplateOut, "description": "the template, with an ETag"},
                           304: {"description": "If-None-Match holds the current ETag"}})
    async def get_template(domain: str, request: Request, label: str = Query("current"), key=reader):
        # async: every client revalidates on its TTL, and a hit is two stat calls (no thread hop needed)
        if label not in LABELS:
            raise Problem(422, "unknown-label", f"label {label!r} is not one of {', '.join(LABELS)}", field="label")
        try:
            body, etag = rendered.get(domain, label)
        except UnknownTemplate as error:
            raise _not_found(error) from None
        headers = {"ETag": etag, "Cache-Control": "no-cache"}  # always revalidate: a 304 is cheap
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @router.get("/{domain}/versions", summary="Every version of a domain's template, oldest first",
                response_model=VersionsOut)
    def list_versions(domain: str, key=reader):
        try:
            found = registry.versions(domain)
        except UnknownTemplate as error:
            raise _not_found(error) from None
        return {"versions": [{"version": item.version, **item.public_metadata()} for item in found]}

    @router.post("/{domain}", status_code=201, summary="Store a new version; it becomes current",
                 response_model=CreatedOut)
    def create_template(domain: str, body: NewTemplate, key=Depends(writer)):
        author = getattr(key, "name", None) or "unknown"
        hidden = hidden_characters(body.description)
        if hidden:
            line, column, name = hidden[0]
            raise Problem(422, "validation-error", f"description: holds a hidden character {name} (line {line}, "
                          f"column {column})", title="Request not valid", field="description")
        try:
            created = registry.create(domain, body.template, body.description, author)
        except UnknownTemplate as error:
            raise _not_found(error) from None
        except TemplateRefused as error:
            raise Problem(422, "template-refused", str(error), title="Template does not render",
                          placeholder=error.placeholder, line=error.line, column=error.column) from None
        log.info("poet service: template %s v%d stored by %s", domain, created.version, author)
        return {"version": created.version, "created_at": created.metadata["created_at"]}

    @router.put("/{domain}/{label}", summary="Point a label (current, production, staging) at a version",
                response_model=UpdatedOut)
    def set_label(domain: str, label: str, body: LabelTarget, key=Depends(writer)):
        if label not in LABELS:
            raise Problem(404, "unknown-label", f"label {label!r} is not one of {', '.join(LABELS)}")
        try:
            updated_at = registry.set_label(domain, body.version, label)
        except UnknownTemplate as error:
            raise _not_found(error) from None
        log.info("poet service: template %s %s -> v%d by %s", domain, label, body.version,
                 getattr(key, "name", None) or "unknown")
        return {"updated_at": updated_at}

    return router
