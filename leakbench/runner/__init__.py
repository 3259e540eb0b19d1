"""Episodes and runs: an agent, a sandbox and an instance, graded as each episode ends."""
