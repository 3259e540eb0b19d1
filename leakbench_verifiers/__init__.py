"""leakbench's verifiers environment under the name verifiers looks for.

verifiers finds a taskset by its id, importing the top-level module of that name
(``leakbench-verifiers`` -> ``leakbench_verifiers``) and taking the classes its ``__all__``
exports. The code is ``leakbench.integrations.verifiers``; this module only gives it that name,
so ``vf-eval leakbench-verifiers`` and verifiers' environment workers find it in any process.
"""

from __future__ import annotations

from leakbench.integrations import verifiers as _integration

if _integration.vf is None:
    raise ImportError(
        f"the leakbench verifiers environment needs verifiers 0.4 or newer: {_integration.INSTALL}"
    )

from leakbench.integrations.verifiers import (
    LeakbenchEnv,
    LeakbenchHarness,
    LeakbenchTask,
    LeakbenchTaskset,
    load_environment,
)

__all__ = [
    "LeakbenchEnv",
    "LeakbenchHarness",
    "LeakbenchTask",
    "LeakbenchTaskset",
    "load_environment",
]
