"""Headless Scipion for pytest: configured here, before any test imports pyworkflow."""
import hashlib
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import scipion_headless  # noqa: E402  (the path above makes it importable)

# setupTestProject wipes and enters $SCIPION_USER_DATA/projects/<TestClass>: each
# checkout and each pytest-xdist worker gets its own folder so runs do not collide.
_CHECKOUT = hashlib.sha1(ROOT.encode()).hexdigest()[:8]
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
scipion_headless.configure(os.path.join(
    tempfile.gettempdir(), "etpicker-tests-%d" % os.getuid(), _CHECKOUT, _WORKER))
