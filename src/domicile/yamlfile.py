"""YAML files validated by pydantic models, with errors that name file, line and field.

The text is parsed twice: once to plain data for pydantic, once to PyYAML's node tree,
which keeps the position of every key. A validation error's location is walked through
that tree to find the line to report.
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from domicile.errors import FileError

Loc = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (several times faster), else the pure one.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
M = TypeVar("M", bound=BaseModel)


def line_of(root: yaml.Node | None, loc: Loc) -> tuple[int | None, str]:
    """Walk ``loc`` through the composed YAML tree; return the deepest line found and the
    dotted field path. Elements of ``loc`` that are not in the tree (pydantic's union tags)
    are skipped; a missing last field is named at its parent's line."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node = value
                    line = key.start_mark.line + 1
                    parts.append(str(part))
                    break
            else:
                if i == len(loc) - 1:
                    parts.append(str(part))
                continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
                parts.append(f"[{part}]")
            continue
        elif isinstance(part, str) and not part.startswith(("function-", "union")):
            parts.append(str(part))
    return line, ".".join(parts).replace(".[", "[")


class YamlSource:
    """One YAML text and where it came from; ``error`` builds ``error_cls`` errors."""

    def __init__(self, name: str, text: str, error_cls: type[FileError] = FileError) -> None:
        self.name = name
        self.text = text
        self.error_cls = error_cls
        self._tree: yaml.Node | None = None

    @property
    def tree(self) -> yaml.Node | None:
        """The node tree, composed only when an error needs positions."""
        if self._tree is None:
            self._tree = yaml.compose(self.text, Loader=_Loader)
        return self._tree

    def parse(self) -> Any:
        try:
            return yaml.load(self.text, Loader=_Loader)  # _Loader is a safe loader
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise self.error_cls(
                f"not valid YAML: {exc.problem or exc}",
                file=self.name,
                line=mark.line + 1 if mark else None,
                hint="fix the YAML syntax at that line",
            ) from None
        except yaml.YAMLError as exc:  # e.g. a control character, which YAML forbids
            raise self.error_cls(
                f"not valid YAML: {getattr(exc, 'reason', None) or type(exc).__name__}",
                file=self.name,
                hint="YAML text cannot hold control characters",
            ) from None
        except ValueError as exc:  # e.g. 2025-02-30 read as a date
            raise self.error_cls(
                f"bad value: {exc}", file=self.name, hint="dates are YYYY-MM-DD and must exist"
            ) from None

    def error(self, loc: Loc, message: str, hint: str | None = None) -> FileError:
        line, path = line_of(self.tree, loc)
        return self.error_cls(message, file=self.name, line=line, field=path or None, hint=hint)

    def validate(self, model: type[M], data: Any) -> M:
        """``model.model_validate(data)``, turning the first problem into a located error."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise first_validation_error(self, exc) from None


def first_validation_error(source: YamlSource, exc: ValidationError) -> FileError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field; check its spelling"
    elif first["type"] == "missing":
        msg = "required field is missing"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return source.error(tuple(first["loc"]), msg + more)
