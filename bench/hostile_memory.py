"""The harness's memory when a worker sends hostile frames: peak RSS growth per case.

    python -m bench.hostile_memory

Each case runs in a fresh harness process (a pool under reduced isolation, one session) whose
agent code writes a raw frame on its own socket instead of calling ``submit_answer``:

- ``baseline``: ``1 + 1`` (the session's own cost, for reference);
- ``submit 8 MB``: a submission frame just under the exec-time cap, a JSON list of 850,000
  floats (7.7 MB) (the harness decodes it, then refuses it: the wrong length);
- ``frame 64 MB``: a frame of 64 MB announced in its header (refused from the header, before
  the body is read: the worker is ended and restarted);
- ``frame 1 GB``: the same with a 1 GB header.

Prints the growth of the harness's peak RSS (``ru_maxrss``) over the baseline case, in MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CASES = {
    "baseline": "1 + 1",
    "submit 8 MB": textwrap.dedent(
        """
        import os, socket, json
        values = [0.12345] * 850_000
        body = json.dumps({"type": "submit", "proba": values, "key": "y_pred_proba",
                           "has_pipeline": False}).encode()
        s = socket.socket(fileno=os.dup(3))
        s.sendall(len(body).to_bytes(8, "big") + body)
        s.recv(1 << 16)
        len(body)
        """
    ),
    "frame 64 MB": textwrap.dedent(
        """
        import os, socket
        socket.socket(fileno=os.dup(3)).sendall((64 * 2**20).to_bytes(8, "big") + b"[" * 65536)
        """
    ),
    "frame 1 GB": textwrap.dedent(
        """
        import os, socket
        socket.socket(fileno=os.dup(3)).sendall((2**30).to_bytes(8, "big") + b"[" * 65536)
        """
    ),
}

HARNESS = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, pandas as pd
    from leakbench.sandbox import SandboxLimits, SandboxPool, SubmitReply

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=200), "target": rng.integers(0, 2, 200)})
    test = pd.DataFrame({"x": rng.normal(size=200)})
    code = sys.stdin.read()
    with SandboxPool(isolation="reduced", spare_workers=False) as pool:
        with pool.open(train, test, SandboxLimits(call_timeout_s=120)) as session:
            session.execute("1 + 1")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result = session.execute(code, on_submit=lambda r: SubmitReply(False, "no"))
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "after_kb": after, "restarted": result.restarted,
                      "output": result.output[:120]}))
    """
)


def measure(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", HARNESS], input=code, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'case':14s} {'peak RSS growth':>16s}  outcome")
    for name, code in CASES.items():
        r = measure(code)
        growth = (r["after_kb"] - r["before_kb"]) / 1024
        outcome = "worker restarted" if r["restarted"] else "call answered"
        print(f"{name:14s} {growth:13.1f} MB  {outcome}: ...{r['output'].strip()[-90:]!r}")


if __name__ == "__main__":
    main()
