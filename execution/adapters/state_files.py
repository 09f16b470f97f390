"""State files of the local adapters: one pydantic model per JSON file, replaced atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


def write_model(path: Path, model: BaseModel) -> None:
    """Write `model` as JSON to `path` so that a reader sees the old file or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(model.model_dump_json(indent=2))
    os.replace(partial, path)


def read_model(path: Path, model_cls: type[ModelT]) -> ModelT | None:
    """The model in `path`; None when the file does not exist or does not hold a valid `model_cls`."""
    try:
        return model_cls.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        log.warning("state file unreadable, ignored", extra={"path": str(path), "error": str(exc)})
        return None
