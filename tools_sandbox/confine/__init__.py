"""In-sandbox confinement: rlimits, uid drop, Landlock and seccomp, applied by `launcher.py`.

Everything under this package is stdlib-only: it runs inside the sandbox before site-packages are
on `sys.path`.
"""
