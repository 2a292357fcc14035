"""tools_sandbox: an isolated tool-execution service for RL rollouts that survives hostile code.

Start it with `rest-megatron sandbox-server` (or `python -m tools_sandbox.server`); talk to it with
`tools_sandbox.client.SandboxClient`. See README.md in this directory for the threat model and
the covered / not covered list. This module stays import-light on purpose: the in-sandbox launcher
imports the package before site-packages are available.
"""
