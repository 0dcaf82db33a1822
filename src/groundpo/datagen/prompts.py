"""The prompts the pipelines send, kept in editable text files.

Packaged prompts live in ``groundpo/datagen/prompts/<pipeline>/<name>.txt`` (those several
pipelines send, such as the stage-1 captions, in ``prompts/shared/``). ``--prompts_dir DIR``
replaces any of them: ``DIR/<name>.txt`` (or ``DIR/<pipeline>/<name>.txt``) wins over the
packaged file of the same name. A prompt file has an optional ``[system]`` section and a
``[user]`` section; ``$name`` / ``${name}`` are filled in by the pipeline (``$$`` is a dollar
sign). Lines starting with ``#`` before the first section are comments. A ``*.lines`` file is a
pool of one-line texts (questions), one per line.

The prompt texts are hashed into the run's fingerprint: resuming a build after editing a prompt
is refused (start a new ``--output_dir``), so one dataset never mixes two prompt versions.
"""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path
from typing import Any

from .errors import InputError

PACKAGED = Path(__file__).parent / "prompts"


class PromptBook:
    def __init__(self, pipeline: str, override_dir: str | None = None) -> None:
        self.pipeline = pipeline
        self.dirs = []
        if override_dir:
            if not Path(override_dir).is_dir():
                raise InputError(f"--prompts_dir: folder {override_dir!r} not found")
            self.dirs += [Path(override_dir) / pipeline, Path(override_dir)]
        self.dirs += [PACKAGED / pipeline, PACKAGED / "shared"]

    def path(self, filename: str) -> Path:
        for folder in self.dirs:
            if (folder / filename).is_file():
                return folder / filename
        raise InputError(f"prompt file {filename!r} of pipeline {self.pipeline!r} not found in {', '.join(map(str, self.dirs))}")

    def names(self) -> list[str]:
        found: dict[str, Path] = {}
        for folder in reversed(self.dirs):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.suffix in (".txt", ".lines"):
                        found[p.name] = p
        return sorted(found)

    def sections(self, name: str) -> dict[str, str]:
        path = self.path(f"{name}.txt")
        text = path.read_text(encoding="utf-8")
        parts = re.split(r"^\[(system|user)\]\s*$", text, flags=re.M)
        sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        if "user" not in sections:
            raise InputError(f"prompt file {path}: needs a [user] section")
        return sections

    def render(self, name: str, **fields: Any) -> dict[str, str]:
        path = self.path(f"{name}.txt")
        out = {}
        for section, body in self.sections(name).items():
            try:
                out[section] = string.Template(body).substitute({k: str(v) for k, v in fields.items()})
            except KeyError as e:
                raise InputError(
                    f"prompt file {path}: unknown placeholder ${e.args[0]}; this prompt can use "
                    + ", ".join(f"${k}" for k in sorted(fields))
                ) from None
            except ValueError as e:
                raise InputError(f"prompt file {path}: {e} (write $$ for a dollar sign)") from None
        return out

    def messages(self, name: str, media: list[dict[str, Any]] | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Chat messages: the system text, then the user turn with ``media`` parts before its text."""
        rendered = self.render(name, **fields)
        messages: list[dict[str, Any]] = []
        if rendered.get("system"):
            messages.append({"role": "system", "content": rendered["system"]})
        user = rendered["user"]
        content: Any = [*media, {"type": "text", "text": user}] if media else user
        messages.append({"role": "user", "content": content})
        return messages

    def lines(self, name: str) -> list[str]:
        path = self.path(f"{name}.lines")
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        items = [line for line in items if line and not line.startswith("#")]
        if not items:
            raise InputError(f"prompt pool {path} is empty")
        return items

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in self.names():
            digest.update(name.encode() + b"\0" + self.path(name).read_bytes() + b"\0")
        return digest.hexdigest()[:16]
