"""The built-in prompts (``system.md``, ``task.md`` next to this file) and their loader."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from leakbench.errors import ConfigError
from leakbench.settings import AgentSettings

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_prompts(agent_settings: AgentSettings, **fields: Any) -> tuple[str, str]:
    """The system and task prompts, with ``{name}`` placeholders filled from ``fields``.

    Fields the caller gives: ``n_train``, ``n_test``, ``columns``, ``leak_columns``;
    ``max_steps`` and ``stdout_max_chars`` default to the agent settings. ``{{``/``}}`` are
    literal braces; other braces (a dict in a code example) are left alone.
    """
    fields.setdefault("max_steps", agent_settings.max_steps)
    fields.setdefault("stdout_max_chars", agent_settings.stdout_max_chars)
    system = _read_prompt(
        agent_settings.system_prompt_file, "system.md", "agent.system_prompt_file"
    )
    task = _read_prompt(agent_settings.task_prompt_file, "task.md", "agent.task_prompt_file")
    return _fill(*system, fields), _fill(*task, fields)


def _read_prompt(path: str | None, default: str, key: str) -> tuple[str, str]:
    if path is None:
        resource = resources.files(__name__) / default
        return resource.read_text(encoding="utf-8"), f"built-in {default}"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except FileNotFoundError:
        raise ConfigError(f"{key}: prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read prompt file {path}: {exc}") from None


def _fill(text: str, source: str, fields: dict[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if name is None:
            return token[0]
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown placeholder {{{name}}} (known: {known})")
        return str(fields[name])

    return _PLACEHOLDER.sub(sub, text)
