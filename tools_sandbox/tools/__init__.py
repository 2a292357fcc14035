"""Tools the sandbox serves, registered by name with the JSON schema the rollout puts in the prompt.

Kept import-light: `schema.py` is also imported inside the sandbox. The registry is in
`registry.py`; each tool family has its own module (calculator, bfcl, user modules).
"""
