"""Agents: the Anthropic tool-use loop, OpenAI-compatible Chat Completions tool calling and the
scripted local policies, behind one protocol."""

from __future__ import annotations

import difflib
from typing import Any

from leakbench.agents.base import Agent
from leakbench.agents.local import POLICIES, LocalAgent
from leakbench.errors import UsageError

PROVIDERS = ("anthropic", "openai", "local")


def parse_model(model: str) -> tuple[str, str]:
    """``provider/name`` from a model string; a bare ``claude-...`` name means anthropic."""
    if "/" in model:
        provider, name = model.split("/", 1)
    elif model.startswith("claude"):
        provider, name = "anthropic", model
    else:
        raise UsageError(
            f"unknown model '{model}'",
            hint="use provider/name: anthropic/claude-haiku-4-5, openai/<model>, or local/<policy>",
        )
    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider '{provider}'", hint=f"known: {', '.join(PROVIDERS)}")
    if not name:
        raise UsageError(f"model '{model}' has no name after the provider")
    if provider == "local" and name not in POLICIES:
        close = difflib.get_close_matches(name, list(POLICIES), n=1)
        hint = f"did you mean 'local/{close[0]}'? " if close else ""
        raise UsageError(
            f"unknown local policy '{name}'",
            hint=f"{hint}known: {', '.join('local/' + p for p in POLICIES)}",
        )
    return provider, name


def canonical_model(model: str) -> str:
    """``provider/name`` for any accepted spelling (``claude-haiku-4-5`` -> ``anthropic/...``)."""
    provider, name = parse_model(model)
    return f"{provider}/{name}"


def make_agent(model: str, settings: Any, client: Any = None) -> Agent:
    """A fresh agent for one episode; ``client`` is the run's shared API client, if any."""
    provider, name = parse_model(model)
    if provider == "local":
        return LocalAgent(name)
    if provider == "openai":
        from leakbench.agents.openai import OpenAIAgent

        server = settings.agent.openai
        return OpenAIAgent(
            name,
            settings.agent,
            settings.run,
            settings.pricing.get(name),
            client=client,
            base_url=server.base_url,
            api_key_env=server.api_key_env,
        )
    from leakbench.agents.anthropic import AnthropicAgent

    return AnthropicAgent(
        name, settings.agent, settings.run, settings.pricing.get(name), client=client
    )


def api_client(settings: Any) -> Any:
    """The client every episode of a run shares: None for a local policy; for a model API, the
    SDK's client with its key and model checked by one cheap request (a ``LeakbenchError`` with
    one clear line when either is wrong), so a run fails before it makes a folder."""
    provider, name = parse_model(settings.agent.model)
    if provider == "local":
        return None
    if provider == "openai":
        from leakbench.agents import openai as openai_agent

        server = settings.agent.openai
        client = openai_agent.make_client(
            settings.run, base_url=server.base_url, api_key_env=server.api_key_env
        )
        openai_agent.check_api_key(client, name, api_key_env=server.api_key_env)
        return client
    from leakbench.agents import anthropic as anthropic_agent

    client = anthropic_agent.make_client(settings.run)
    anthropic_agent.check_api_key(client, name)
    return client


# What each provider's SDK client reads from the environment: the key and the address.
_CLIENT_VARIABLES = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"),
    "openai": ("OPENAI_BASE_URL",),
}


def client_environment(settings: Any) -> dict[str, str]:
    """The variables a model API client of this run reads, with this machine's values (the
    environment, else a ``.env`` file in the working directory): what a process elsewhere (a
    Ray node) needs to make the same client. Empty for a local policy. Secret: hand it over in
    memory, never through a file or a log."""
    from leakbench.agents.model_api import api_key_from_env

    provider, _ = parse_model(settings.agent.model)
    names = list(_CLIENT_VARIABLES.get(provider, ()))
    if provider == "openai":
        names.append(settings.agent.openai.api_key_env)
    found = {name: api_key_from_env(name) for name in names}
    return {name: value for name, value in found.items() if value}
