"""Reading an upload for `colorgan serve`: the body within a byte limit (while it arrives),
and a multipart form's parts: the image, its reference images and the text fields."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from colorgan.errors import UploadRefused

MULTIPART_SLACK = 64 * 1024  # bytes of multipart headers allowed beyond the image itself


async def read_body(stream: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The request body, refused (413) as soon as it grows past `limit` bytes."""
    too_big = UploadRefused(413, f"upload over the limit of {limit / 2**20:.1f} MB")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, total = [], 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


TEXT_FIELDS = ("hints", "caution")  # the multipart fields that come with the image
REFERENCE_FIELD = "reference"  # the multipart file field of a reference image (model.reference)
MAX_REFERENCES = 8  # reference images one request may send (the field repeated)
NO_FILE = "no file in the multipart upload: send it as a form file field"


@dataclass(frozen=True)
class Form:
    """A multipart/form-data body's parts: the image (its first other file), the references'
    bytes (in the order sent) and the text fields (TEXT_FIELDS) that are there."""

    image: bytes | None
    references: tuple[bytes, ...]
    fields: dict[str, str]


async def read_multipart(headers: Any, body: bytes, limit: int) -> Form:
    """A multipart/form-data body's image, references (at most MAX_REFERENCES) and text
    fields."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    files = MAX_REFERENCES + 1 + len(TEXT_FIELDS)  # a text field may come as a file
    parser = MultiPartParser(headers, once(), max_files=files, max_fields=8, max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise UploadRefused(400, f"bad multipart upload ({err.message})") from None
    try:
        fields = {}
        for name in TEXT_FIELDS:
            value = form.get(name)
            if isinstance(value, UploadFile):
                value = (await value.read()).decode("utf-8", errors="replace")
            if value is not None:
                fields[name] = value
        references = form.getlist(REFERENCE_FIELD)
        if any(isinstance(reference, str) for reference in references):
            raise UploadRefused(400, "reference: send the reference image as a form file field")
        if len(references) > MAX_REFERENCES:
            raise UploadRefused(
                400,
                f"reference: at most {MAX_REFERENCES} images per request, got {len(references)}",
            )
        images = [
            value
            for name, value in form.multi_items()
            if isinstance(value, UploadFile) and name not in (*TEXT_FIELDS, REFERENCE_FIELD)
        ]
        return Form(
            await images[0].read() if images else None,
            tuple([await r.read() for r in references if isinstance(r, UploadFile)]),
            fields,
        )
    finally:
        await form.close()
