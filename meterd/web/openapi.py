"""Placeholder; replaced by the full document."""
from typing import Any
def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "meterd", "version": "0.1.0"}, "paths": {}}
